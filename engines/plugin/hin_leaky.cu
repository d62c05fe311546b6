// Fused Half Instance Norm + LeakyReLU, the HIN block of HINet.
//
// x, y: N x C x H x W, contiguous, float or half. gamma, beta: C/2 floats.
// Planes c < C/2 are instance-normalised with statistics in FP32 (Welford per thread, Chan's merge
// across threads and blocks), the affine folded into one multiply-add (scale = gamma *
// rsqrt(var + eps), shift = beta - mean * scale), then LeakyReLU. Planes c >= C/2 only go through the
// LeakyReLU. Two ways, chosen by the launcher (engines/plugin/hin_plugin.py):
// - hin_leaky: one block per plane, the plane cached in shared memory (H*W floats): one read of
//   the input, one write of the output. For planes that fit.
// - hin_stats then hin_apply: each plane split over `splits` blocks, so that large planes with few
//   channels still fill the GPU; partial statistics (count, mean, M2) go through a small workspace
//   of N * C/2 * splits * 3 floats. The input is read twice.
// Compiled at run time with NVRTC (no host code here), and by the tests with nvcc.
// FP16 values travel as their raw 16 bits (unsigned short) and are converted with PTX cvt, so the
// source needs no header: NVRTC finds no cuda_fp16.h on machines without the CUDA toolkit.

namespace {

__device__ __forceinline__ float load(const float* p, int i) { return p[i]; }
__device__ __forceinline__ float load(const unsigned short* p, int i) {
  float v;
  asm("cvt.f32.f16 %0, %1;" : "=f"(v) : "h"(p[i]));
  return v;
}
__device__ __forceinline__ void store(float* p, int i, float v) { p[i] = v; }
__device__ __forceinline__ void store(unsigned short* p, int i, float v) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  p[i] = h;
}

__device__ __forceinline__ float leaky(float v, float slope) { return v >= 0.f ? v : v * slope; }

// Chan et al.'s parallel merge of two (count, mean, M2) partial statistics.
__device__ __forceinline__ void merge(float& n, float& mean, float& m2,
                                      float nb, float meanb, float m2b) {
  const float total = n + nb;
  if (total == 0.f) return;
  const float delta = meanb - mean;
  const float wb = nb / total;
  mean += delta * wb;
  m2 += m2b + delta * delta * n * wb;
  n = total;
}

__device__ __forceinline__ void warp_merge(float& n, float& mean, float& m2) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float nb = __shfl_down_sync(0xffffffffu, n, offset);
    const float meanb = __shfl_down_sync(0xffffffffu, mean, offset);
    const float m2b = __shfl_down_sync(0xffffffffu, m2, offset);
    merge(n, mean, m2, nb, meanb, m2b);
  }
}

__device__ __forceinline__ void welford(float& n, float& mean, float& m2, float v) {
  n += 1.f;
  const float d = v - mean;
  mean += d / n;
  m2 += d * (v - mean);
}

// Merges the block's per-thread statistics; the block's total lands in lane 0 of warp 0.
__device__ void block_merge(float& n, float& mean, float& m2) {
  __shared__ float warp_n[32], warp_mean[32], warp_m2[32];
  warp_merge(n, mean, m2);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { warp_n[warp] = n; warp_mean[warp] = mean; warp_m2[warp] = m2; }
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + 31) >> 5;
    n = lane < warps ? warp_n[lane] : 0.f;
    mean = lane < warps ? warp_mean[lane] : 0.f;
    m2 = lane < warps ? warp_m2[lane] : 0.f;
    warp_merge(n, mean, m2);
  }
}

template <typename T>
__device__ void hin_leaky(const T* __restrict__ x, T* __restrict__ y,
                          const float* __restrict__ gamma, const float* __restrict__ beta,
                          int channels, int half, int hw, float eps, float slope) {
  extern __shared__ float plane[];
  __shared__ float s_scale, s_shift;
  const int c = blockIdx.x % channels;
  const T* src = x + static_cast<size_t>(blockIdx.x) * hw;
  T* dst = y + static_cast<size_t>(blockIdx.x) * hw;
  if (c >= half) {  // pass-through half: LeakyReLU only
    for (int i = threadIdx.x; i < hw; i += blockDim.x) store(dst, i, leaky(load(src, i), slope));
    return;
  }
  float n = 0.f, mean = 0.f, m2 = 0.f;
  for (int i = threadIdx.x; i < hw; i += blockDim.x) {
    const float v = load(src, i);
    plane[i] = v;
    welford(n, mean, m2, v);
  }
  block_merge(n, mean, m2);
  if (threadIdx.x == 0) {
    const float scale = gamma[c] * rsqrtf(m2 / static_cast<float>(hw) + eps);  // population var
    s_scale = scale;
    s_shift = beta[c] - mean * scale;
  }
  __syncthreads();
  const float scale = s_scale, shift = s_shift;
  for (int i = threadIdx.x; i < hw; i += blockDim.x) {
    store(dst, i, leaky(fmaf(plane[i], scale, shift), slope));
  }
}

// Chunk `part` of `splits` of a plane of hw elements: [begin, end).
__device__ __forceinline__ void chunk(int hw, int splits, int part, int& begin, int& end) {
  const int size = (hw + splits - 1) / splits;
  begin = min(hw, part * size);
  end = min(hw, begin + size);
}

// Grid: N * half * splits blocks. partial[(n * half + c) * splits + part] = (count, mean, M2).
template <typename T>
__device__ void hin_stats(const T* __restrict__ x, float* __restrict__ partial, int channels,
                          int half, int hw, int splits) {
  const int part = blockIdx.x % splits, normed = blockIdx.x / splits;
  const int n_index = normed / half, c = normed % half;
  const T* src = x + (static_cast<size_t>(n_index) * channels + c) * hw;
  int begin, end;
  chunk(hw, splits, part, begin, end);
  float n = 0.f, mean = 0.f, m2 = 0.f;
  for (int i = begin + threadIdx.x; i < end; i += blockDim.x) welford(n, mean, m2, load(src, i));
  block_merge(n, mean, m2);
  if (threadIdx.x == 0) {
    float* out = partial + static_cast<size_t>(blockIdx.x) * 3;
    out[0] = n; out[1] = mean; out[2] = m2;
  }
}

// Grid: N * C * splits blocks; each merges its plane's partials (normalised half) and writes its
// chunk of the output.
template <typename T>
__device__ void hin_apply(const T* __restrict__ x, T* __restrict__ y,
                          const float* __restrict__ partial, const float* __restrict__ gamma,
                          const float* __restrict__ beta, int channels, int half, int hw,
                          int splits, float eps, float slope) {
  __shared__ float s_scale, s_shift;
  const int part = blockIdx.x % splits, plane_index = blockIdx.x / splits;
  const int n_index = plane_index / channels, c = plane_index % channels;
  const T* src = x + static_cast<size_t>(plane_index) * hw;
  T* dst = y + static_cast<size_t>(plane_index) * hw;
  int begin, end;
  chunk(hw, splits, part, begin, end);
  if (c >= half) {
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
      store(dst, i, leaky(load(src, i), slope));
    }
    return;
  }
  if (threadIdx.x < 32) {  // splits <= 32: one warp merges the plane's partials
    const float* p = partial + (static_cast<size_t>(n_index) * half + c) * splits * 3;
    const int lane = threadIdx.x;
    float n = lane < splits ? p[lane * 3] : 0.f;
    float mean = lane < splits ? p[lane * 3 + 1] : 0.f;
    float m2 = lane < splits ? p[lane * 3 + 2] : 0.f;
    warp_merge(n, mean, m2);
    if (lane == 0) {
      const float scale = gamma[c] * rsqrtf(m2 / static_cast<float>(hw) + eps);
      s_scale = scale;
      s_shift = beta[c] - mean * scale;
    }
  }
  __syncthreads();
  const float scale = s_scale, shift = s_shift;
  for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
    store(dst, i, leaky(fmaf(load(src, i), scale, shift), slope));
  }
}

}  // namespace

#define HIN_KERNELS(SUFFIX, T)                                                                    \
  extern "C" __global__ void hin_leaky_##SUFFIX(const T* x, T* y, const float* gamma,            \
                                                const float* beta, int channels, int half,       \
                                                int hw, float eps, float slope) {                \
    hin_leaky(x, y, gamma, beta, channels, half, hw, eps, slope);                                \
  }                                                                                               \
  extern "C" __global__ void hin_stats_##SUFFIX(const T* x, float* partial, int channels,        \
                                                int half, int hw, int splits) {                  \
    hin_stats(x, partial, channels, half, hw, splits);                                           \
  }                                                                                               \
  extern "C" __global__ void hin_apply_##SUFFIX(const T* x, T* y, const float* partial,          \
                                                const float* gamma, const float* beta,           \
                                                int channels, int half, int hw, int splits,      \
                                                float eps, float slope) {                        \
    hin_apply(x, y, partial, gamma, beta, channels, half, hw, splits, eps, slope);               \
  }

HIN_KERNELS(f32, float)
HIN_KERNELS(f16, unsigned short)
