"""GPU arrays through the Restorer, and the engine runner's device memory.

CPU: the torch image conversions equal the numpy ones, device arrays are recognised, tensors go
through tiling and backends like numpy arrays. GPU (marked): torch and cupy images in and out on the
GPU, and EngineRunner (the TensorRT backend's I/O, copies, zero-copy binding, CUDA graphs, buffer
growth) driven by a stand-in execution context whose "network" is a real CUDA kernel (y = 1 - x):
TensorRT-RTX does not run on the H100 (sm_90) and full TensorRT is not installable (README).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.limits import SizeLimits
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.device import from_network_device, is_device_array, to_network_device
from hinet_deploy.runtime.images import from_network, to_network

LAYOUTS = [(20, 30), (20, 30, 1), (20, 30, 3), (20, 30, 4)]
DTYPES = [np.uint8, np.uint16, np.float32]


def _image(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LAYOUTS)
def test_torch_conversions_equal_numpy_ones(shape, dtype):
    image = _image(shape, dtype)
    want_chw, want_layout = to_network(image)
    chw, layout = to_network_device(torch.from_numpy(image))
    np.testing.assert_array_equal(chw.numpy(), want_chw)
    result = want_chw * 1.3 - 0.1  # something to clip and round
    back = from_network_device(torch.from_numpy(result.copy()), layout)
    np.testing.assert_array_equal(back.numpy(), from_network(result.copy(), want_layout))
    assert back.dtype == torch.from_numpy(image).dtype and tuple(back.shape) == shape


def test_torch_images_are_checked_like_numpy_ones():
    with pytest.raises(HinetDeployError, match=r"dtype (torch\.)?bfloat16 is not supported"):
        to_network_device(torch.zeros(8, 8, 3, dtype=torch.bfloat16))
    with pytest.raises(HinetDeployError, match="channels go last"):
        to_network_device(torch.zeros(3, 8, 8, 5))
    with pytest.raises(HinetDeployError, match="NaN or infinite"):
        to_network_device(torch.full((8, 8, 3), float("nan")))


class _Dlpack:
    def __init__(self, kind):
        self.kind = kind

    def __dlpack_device__(self):
        return (self.kind, 0)


class _CudaArrayInterface:
    __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (0, False), "version": 3}


def test_device_arrays_are_recognised():
    assert not is_device_array(np.zeros(3))
    assert not is_device_array(torch.zeros(3))  # CPU tensors take the numpy path
    assert is_device_array(_Dlpack(2)) and is_device_array(_Dlpack(13))
    assert not is_device_array(_Dlpack(1))
    assert is_device_array(_CudaArrayInterface())


@pytest.mark.parametrize("which", ["onnx", "ckpt"])
def test_tensors_tile_through_every_backend_like_numpy(which, small_onnx, small_ckpt):
    """torch tensors go through tiling and the backend (ONNX Runtime: via host memory; PyTorch:
    run_device) and give the numpy path's result."""
    model = small_onnx if which == "onnx" else small_ckpt
    chw = to_network(_image((40, 72, 3), np.uint8))[0]
    with Restorer(model, mode="blend", tile=32, overlap=8, batch=3) as restorer:
        want = restorer.restore_chw(chw.copy())
        got = restorer.restore_chw(torch.from_numpy(chw.copy()))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_a_backend_object_is_used_as_given():
    class Halve:
        limits = SizeLimits(fixed_batch=2)
        calls = []

        def run(self, batch):
            self.calls.append(batch.shape)
            return batch * 0.5

        def close(self):
            pass

    image = _image((20, 40, 3), np.float32)
    with Restorer(Halve(), mode="blend", tile=16, overlap=0, batch=2) as restorer:
        out = restorer(image)
    np.testing.assert_allclose(out, image * 0.5, atol=1e-6)
    assert set(Halve.calls) == {(2, 3, 16, 16)}  # fixed batch of 2: an odd tile count is padded


# ------------------------------------------------------------------ GPU

def _cuda() -> bool:
    return torch.cuda.is_available()


def _to_cuda_kind(array, kind):
    if kind == "torch":
        return torch.from_numpy(array).cuda()
    cupy = pytest.importorskip("cupy")
    return cupy.asarray(array)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["torch", "cupy"])
@pytest.mark.parametrize("mode", ["whole", "blend"])
def test_gpu_images_stay_on_the_gpu_and_match_numpy(kind, mode, small_ckpt):
    image = _image((70, 90, 3), np.uint8)
    options = dict(mode=mode, tile=32, overlap=8) if mode == "blend" else {}
    with Restorer(small_ckpt, device="cuda", **options) as gpu_restorer, \
            Restorer(small_ckpt, **options) as cpu_restorer:
        want = cpu_restorer(image)
        from_numpy = gpu_restorer(image)
        device_image = _to_cuda_kind(image, kind)
        before = device_image.copy() if kind == "cupy" else device_image.clone()
        out = gpu_restorer(device_image)
    assert type(out) is type(device_image)
    host = out.cpu().numpy() if kind == "torch" else out.get()
    if kind == "torch":
        assert out.is_cuda
    assert host.dtype == np.uint8 and host.shape == image.shape
    assert np.abs(host.astype(int) - from_numpy.astype(int)).max() <= 1
    assert np.abs(host.astype(int) - want.astype(int)).max() <= 1  # GPU vs CPU PyTorch
    assert bool((device_image == before).all())  # the caller's image is left alone


_INVERT = r"""
extern "C" __global__ void invert_f32(const float* x, float* y, long long n) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i < n) y[i] = 1.f - x[i];
}
extern "C" __global__ void invert_f16(const unsigned short* x, unsigned short* y, long long n) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i < n) {
    float v;
    asm("cvt.f32.f16 %0, %1;" : "=f"(v) : "h"(x[i]));
    v = 1.f - v;
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    y[i] = h;
  }
}
"""


class _StandInContext:
    """An execution context whose network is y = 1 - x, launched on the stream it is given."""

    def __init__(self, half: bool):
        import cupy

        self.cupy = cupy
        self.kernel = cupy.RawKernel(_INVERT, "invert_f16" if half else "invert_f32")
        self.shape, self.address, self.executions = None, {}, 0

    def set_input_shape(self, name, shape):
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.address[name] = int(ptr)
        return True

    def execute_async_v3(self, stream):
        n = int(np.prod(self.shape))
        with self.cupy.cuda.ExternalStream(stream):
            self.kernel(((n + 255) // 256,), (256,), (np.uint64(self.address["input"]),
                                                     np.uint64(self.address["output"]),
                                                     np.int64(n)))
        self.executions += 1
        return True


PROFILE = {"min": [1, 3, 16, 16], "opt": [1, 3, 64, 64], "max": [4, 3, 128, 128]}


def _runner(half=False, capture=False):
    pytest.importorskip("cupy")
    from hinet_deploy.runtime.backends.tensorrt import CudaDevice, EngineIO, EngineRunner

    dtype = np.dtype(np.float16 if half else np.float32)
    context = _StandInContext(half)
    io = EngineIO("input", ("output",), "output", {"input": dtype, "output": dtype})
    return EngineRunner(CudaDevice(0), context, io, PROFILE, capture=capture), context


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("half", [False, True])
def test_runner_numpy_and_zero_copy_paths(half):
    runner, context = _runner(half)
    tol = 1e-3 if half else 0
    x = np.random.default_rng(0).random((2, 3, 48, 80), dtype=np.float32)
    np.testing.assert_allclose(runner.run(x), 1 - x, atol=tol)
    t = torch.from_numpy(x).cuda()
    y = runner.run_device(t)
    assert y.is_cuda and y.dtype == torch.float32
    np.testing.assert_allclose(y.cpu().numpy(), 1 - x, atol=tol)
    if not half:  # float32 in: the engine reads the caller's memory itself
        assert context.address["input"] == t.data_ptr()
    with pytest.raises(HinetDeployError, match="outside the engine's profile"):
        runner.run_device(torch.zeros(1, 3, 256, 256, device="cuda"))
    runner.close()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_runner_keeps_a_bounded_number_of_graphs():
    """Whole images of many sizes: the graphs kept stay at MAX_CUDA_GRAPHS, the most recent ones."""
    from hinet_deploy.runtime.backends.tensorrt import MAX_CUDA_GRAPHS

    runner, _ = _runner(capture=True)
    rng = np.random.default_rng(3)
    shapes = [(1, 3, 16 * (1 + k % 8), 16 * (1 + k // 8)) for k in range(MAX_CUDA_GRAPHS + 4)]
    shapes.sort(key=np.prod, reverse=True)  # largest first: no graph is dropped by buffer growth
    for shape in shapes:
        x = rng.random(shape, dtype=np.float32)
        np.testing.assert_allclose(runner.run(x), 1 - x)
        assert len(runner.graphs) <= MAX_CUDA_GRAPHS
    assert list(runner.graphs) == shapes[-MAX_CUDA_GRAPHS:]
    runner.close()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_runner_cuda_graphs_replay_per_shape():
    runner, context = _runner(capture=True)
    rng = np.random.default_rng(1)
    small, large = (1, 3, 32, 32), (2, 3, 64, 64)
    for shape in (small, small, small):
        x = rng.random(shape, dtype=np.float32)
        np.testing.assert_allclose(runner.run(x), 1 - x)
    assert context.executions == 2 and len(runner.graphs) == 1  # a warm run, a capture, replays
    x = rng.random(large, dtype=np.float32)  # larger buffers: graphs of old addresses dropped
    np.testing.assert_allclose(runner.run(x), 1 - x)
    assert list(runner.graphs) == [large]
    t = torch.from_numpy(x).cuda()
    np.testing.assert_allclose(runner.run_device(t).cpu().numpy(), 1 - x)
    assert context.executions == 4
    runner.close()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("capture", [False, True])
def test_restorer_on_the_runner_tiles_on_the_gpu_without_leaking(capture):
    runner, _ = _runner(capture=capture)

    class Backend:
        limits = SizeLimits(max_batch=4, max_hw=(128, 128))
        run, run_device, close = runner.run, runner.run_device, runner.close

    rng = np.random.default_rng(2)
    sizes = [(300, 200), (97, 131), (64, 64), (250, 310)]
    with Restorer(Backend(), mode="blend", tile=128, overlap=32, batch=4) as restorer:
        def once():
            for h, w in sizes:
                image = rng.random((h, w, 3), dtype=np.float32)
                np.testing.assert_allclose(restorer(image), 1 - image, atol=1e-5)
                out = restorer(torch.from_numpy(image).cuda())
                np.testing.assert_allclose(out.cpu().numpy(), 1 - image, atol=1e-5)

        once()  # buffers and graphs reach their largest
        torch.cuda.synchronize()
        free, allocated = runner.cuda.free_bytes(), torch.cuda.memory_allocated()
        for _ in range(5):
            once()
        torch.cuda.synchronize()
        assert runner.cuda.free_bytes() >= free - (2 << 20)  # no growth beyond allocator slack
        assert torch.cuda.memory_allocated() <= allocated
