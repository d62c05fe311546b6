"""TensorRT engines on a CUDA GPU: `tensorrt` or `tensorrt_rtx`, whichever built the engine.

Before anything runs, the engine's sidecar and the installed backend must agree, and a GPU must be
usable; when the engine still does not load, the error says which mismatch of GPU and engine is the
likely cause. Device memory goes through cuda-python
(cuda-bindings): pinned host buffers and device buffers, reused across calls and grown only when a
larger shape arrives, async copies and execute_async_v3 on one CUDA stream.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.backend import load_backend
from engines.build import read_sidecar
from hinet_deploy.errors import HinetDeployError
from hinet_deploy.lazy import require

# TensorRT-RTX 1.7 runs engines only on these GPUs (its ComputeCapability enum; FINDINGS.md).
RTX_COMPUTE_CAPABILITIES = {(7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}
INSTALL_CUDA = "pip install cuda-bindings"


@dataclass
class BufferPlan:
    """Byte capacities of named buffers: a request larger than the capacity grows it, others reuse."""

    capacity: dict[str, int] = field(default_factory=dict)

    def grow(self, name: str, nbytes: int) -> bool:
        """True when the buffer must be (re)allocated for `nbytes`."""
        if nbytes <= self.capacity.get(name, 0):
            return False
        self.capacity[name] = nbytes
        return True


def check_sidecar(sidecar: dict, backend_name: str, backend_version: str, engine: Path) -> None:
    if sidecar.get("backend") != backend_name:
        raise HinetDeployError(f"{engine} was built with {sidecar.get('backend')}, not {backend_name}")
    if sidecar.get("backend_version") != backend_version:
        raise HinetDeployError(
            f"{engine} was built with {backend_name} {sidecar.get('backend_version')} but "
            f"{backend_version} is installed: engines only load in the version that built them; "
            f"rebuild it with hinet-deploy build")


def gpu_mismatch(backend_name: str, capability: tuple[int, int], gpu_name: str,
                 targets: list[str]) -> str | None:
    """Why this GPU may not run the engine, or None. Used to explain a failed deserialisation rather
    than to refuse up front: whether TensorRT-RTX runs on GPUs outside its list (Hopper) is unknown
    (FINDINGS.md)."""
    if backend_name != "tensorrt_rtx":
        return None
    if capability not in RTX_COMPUTE_CAPABILITIES:
        supported = ", ".join(f"{a}.{b}" for a, b in sorted(RTX_COMPUTE_CAPABILITIES))
        return (f"{gpu_name} has compute capability {capability[0]}.{capability[1]}, outside "
                f"TensorRT-RTX's list ({supported}); build with full TensorRT for it")
    wanted = f"SM{capability[0]}{capability[1]}"
    if targets and wanted not in targets:
        return (f"the engine was built for {', '.join(targets)}, not for {gpu_name} ({wanted}); "
                f"rebuild with --compute-capability {wanted}")
    return None


def check_shape(shape: tuple[int, int, int, int], profile: dict) -> None:
    """The input N x 3 x H x W must lie inside the engine's optimisation profile."""
    low, high = profile["min"], profile["max"]
    if not all(a <= s <= b for a, s, b in zip(low, shape, high)):
        raise HinetDeployError(
            f"input {'x'.join(map(str, shape))} is outside the engine's profile "
            f"{'x'.join(map(str, low))} .. {'x'.join(map(str, high))}: use the Restorer's blend mode "
            f"with tile <= {min(high[2], high[3])} and batch <= {high[0]}, or rebuild with a larger "
            f"--max")


class _Cuda:
    """The few CUDA runtime calls used here, turning error codes into HinetDeployError."""

    def __init__(self, device: int):
        self.rt = require("cuda.bindings.runtime", INSTALL_CUDA, "running TensorRT engines")
        err, count = self.rt.cudaGetDeviceCount()
        if err != self.rt.cudaError_t.cudaSuccess or not count:
            raise HinetDeployError(f"running a TensorRT engine needs an NVIDIA GPU and driver; "
                                   f"none is usable here ({self.error_text(err)})")
        self.call(self.rt.cudaSetDevice(device))
        props = self.call(self.rt.cudaGetDeviceProperties(device))
        self.capability = (props.major, props.minor)
        self.name = props.name.decode(errors="replace").strip("\x00")
        self.stream = self.call(self.rt.cudaStreamCreate())

    def error_text(self, err) -> str:
        return self.rt.cudaGetErrorString(err)[1].decode(errors="replace")

    def call(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise HinetDeployError(f"CUDA error: {self.error_text(err)}")
        return rest[0] if len(rest) == 1 else (rest or None)


class TensorRtBackend:
    name = "tensorrt"
    fixed_batch = None
    fixed_hw = None

    def __init__(self, path, device: int = 0):
        self.path = Path(path)
        self.sidecar = read_sidecar(self.path)
        trt_backend = load_backend(self.sidecar.get("backend"))
        check_sidecar(self.sidecar, trt_backend.name, trt_backend.version, self.path)
        self.name = trt_backend.name
        self.cuda = _Cuda(device)
        trt = self.trt = trt_backend.module
        if self.sidecar.get("hin_plugin"):
            from engines.plugin.hin_plugin import register

            register(trt)  # the engine holds plugin layers: their creator must be known first
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            why = gpu_mismatch(trt_backend.name, self.cuda.capability, self.cuda.name,
                               self.sidecar.get("compute_capabilities", []))
            raise HinetDeployError(f"{trt_backend.name} could not deserialise {self.path} on "
                                   f"{self.cuda.name}: {why or 'its log above says why'}")
        self.context = self.engine.create_execution_context()
        self.size_multiple = int(self.sidecar.get("size_multiple", 16))
        self.profile = self.sidecar["profiles"][0]
        self.max_hw = (self.profile["max"][2], self.profile["max"][3])
        self.max_batch = self.profile["max"][0]
        self.io_dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
                         for n in ("input", "output")}
        self.plan = BufferPlan()
        self.device_ptr: dict[str, int] = {}
        self.host_ptr: dict[str, int] = {}

    def _buffers(self, name: str, nbytes: int):
        rt, call = self.cuda.rt, self.cuda.call
        if self.plan.grow(name, nbytes):
            if name in self.device_ptr:
                call(rt.cudaFree(self.device_ptr[name]))
                call(rt.cudaFreeHost(self.host_ptr[name]))
            self.device_ptr[name] = call(rt.cudaMalloc(nbytes))
            self.host_ptr[name] = call(rt.cudaMallocHost(nbytes))
        return self.device_ptr[name], self.host_ptr[name]

    def _host_view(self, name: str, shape) -> np.ndarray:
        dtype = self.io_dtype[name]
        count = int(np.prod(shape))
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.host_ptr[name])
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def run(self, batch: np.ndarray) -> np.ndarray:
        rt, call, stream = self.cuda.rt, self.cuda.call, self.cuda.stream
        check_shape(batch.shape, self.profile)
        nbytes = {n: batch.size * self.io_dtype[n].itemsize for n in ("input", "output")}
        d_in, _ = self._buffers("input", nbytes["input"])
        d_out, _ = self._buffers("output", nbytes["output"])
        np.copyto(self._host_view("input", batch.shape), batch, casting="same_kind")
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(rt.cudaMemcpyAsync(d_in, self.host_ptr["input"], nbytes["input"], h2d, stream))
        self.context.set_input_shape("input", batch.shape)
        self.context.set_tensor_address("input", d_in)
        self.context.set_tensor_address("output", d_out)
        if not self.context.execute_async_v3(int(stream)):
            raise HinetDeployError(f"{self.name} failed to run {self.path} at {batch.shape}")
        call(rt.cudaMemcpyAsync(self.host_ptr["output"], d_out, nbytes["output"], d2h, stream))
        call(rt.cudaStreamSynchronize(stream))
        return self._host_view("output", batch.shape).astype(np.float32)

    def close(self) -> None:
        rt = self.cuda.rt
        for ptr in self.device_ptr.values():
            rt.cudaFree(ptr)
        for ptr in self.host_ptr.values():
            rt.cudaFreeHost(ptr)
        self.device_ptr, self.host_ptr = {}, {}
        self.context = self.engine = None
        rt.cudaStreamDestroy(self.cuda.stream)
