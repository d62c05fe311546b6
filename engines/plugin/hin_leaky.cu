// Fused Half Instance Norm + LeakyReLU, the HIN block of HINet in one kernel.
//
// x, y: N x C x H x W, contiguous, float or half. gamma, beta: C/2 floats.
// One block per (n, c) plane. Planes c < C/2 are instance-normalised with statistics in FP32
// (Welford per thread, merged across the block), the affine folded into one multiply-add
// (scale = gamma * rsqrt(var + eps), shift = beta - mean * scale), then LeakyReLU. Planes c >= C/2
// only go through the LeakyReLU. When a plane fits in shared memory (cache_plane != 0, dynamic
// shared memory of H*W floats), the input is read from global memory once; otherwise twice.
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

template <typename T>
__device__ void hin_leaky(const T* __restrict__ x, T* __restrict__ y,
                          const float* __restrict__ gamma, const float* __restrict__ beta,
                          int channels, int half, int hw, float eps, float slope, int cache_plane) {
  extern __shared__ float plane[];
  __shared__ float warp_n[32], warp_mean[32], warp_m2[32];
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
    if (cache_plane) plane[i] = v;
    n += 1.f;
    const float d = v - mean;
    mean += d / n;
    m2 += d * (v - mean);
  }
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
    if (lane == 0) {
      const float var = m2 / static_cast<float>(hw);  // population variance, as InstanceNorm
      const float scale = gamma[c] * rsqrtf(var + eps);
      s_scale = scale;
      s_shift = beta[c] - mean * scale;
    }
  }
  __syncthreads();
  const float scale = s_scale, shift = s_shift;
  for (int i = threadIdx.x; i < hw; i += blockDim.x) {
    const float v = cache_plane ? plane[i] : load(src, i);
    store(dst, i, leaky(fmaf(v, scale, shift), slope));
  }
}

}  // namespace

extern "C" __global__ void hin_leaky_f32(const float* x, float* y, const float* gamma,
                                         const float* beta, int channels, int half, int hw,
                                         float eps, float slope, int cache_plane) {
  hin_leaky(x, y, gamma, beta, channels, half, hw, eps, slope, cache_plane);
}

extern "C" __global__ void hin_leaky_f16(const unsigned short* x, unsigned short* y, const float* gamma,
                                         const float* beta, int channels, int half, int hw,
                                         float eps, float slope, int cache_plane) {
  hin_leaky(x, y, gamma, beta, channels, half, hw, eps, slope, cache_plane);
}
