"""ONNX Runtime on an NVIDIA GPU: the pip-only GPU path, data-centre GPUs included.

TensorRT-RTX refuses Hopper (H100/H200, compute capability 9.0) and full TensorRT does not install
from the package index; ONNX Runtime's GPU build (`onnxruntime-gpu`, the `gpu` extra: its CUDA 13
wheel, with the CUDA and cuDNN libraries it loads from the index, plus cuBLAS, which its `[cuda]`
extra omits) carries kernels for sm_75 to sm_120, sm_90 included. `onnxruntime` and
`onnxruntime-gpu` install the same module: the extra replaces the CPU build, it does not add to it.

Two providers: `cuda` (ONNX Runtime's CUDA execution provider; FP32 and FP16 graphs) and
`tensorrt-rtx` (NVIDIA's TensorRT-RTX plugin execution provider, `onnxruntime-ep-nv-tensorrt-rtx`,
RTX-class GPUs only). Torch (or cupy) images on the GPU stay there: they are bound to the session
in place (I/O binding), as the TensorRT backend does. Asking for a GPU provider where it cannot run
is one line, never a silent run on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import install_hint, require
from hinet_deploy.runtime.backends.base import option
from hinet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

CUDA = "CUDAExecutionProvider"
PROVIDERS = ("cuda", "tensorrt-rtx")
RTX_PLUGIN = "onnxruntime_ep_nv_tensorrt_rtx"  # the plugin package's module


@dataclass(frozen=True)
class OnnxRuntimeGpuOptions:
    provider: str = option("cuda", "ONNX Runtime's GPU provider: cuda, or tensorrt-rtx (RTX GPUs, "
                                   "with onnxruntime-ep-nv-tensorrt-rtx)")
    device: int = option(0, "the CUDA device's index", cli=False)
    session_config: tuple = option((), "ONNX Runtime session config entries", cli=False)


def cuda_provider_here(ort) -> str | None:
    """Why ONNX Runtime's CUDA provider cannot run here, or None where it can."""
    if hasattr(ort, "preload_dlls"):  # the CUDA libraries of the nvidia-* wheels, before a session
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001: whatever fails to load, the check below says so
            pass
    if CUDA not in ort.get_available_providers():
        return (f"this onnxruntime is a CPU build (it offers "
                f"{', '.join(ort.get_available_providers())}); ONNX Runtime's GPU build replaces "
                f"it: {install_hint('gpu')}")
    from hinet_deploy.engines.targets import nvidia_driver_present

    if not nvidia_driver_present():
        return "no NVIDIA GPU here (no NVIDIA driver is installed)"
    return None


class OnnxRuntimeGpuBackend(OnnxRuntimeBackend):
    """An ONNX graph on an NVIDIA GPU through ONNX Runtime's GPU providers."""

    name = "onnxruntime-gpu"
    suffixes = (".onnx",)
    extra = "gpu"
    requires = ()  # the `onnxruntime` module, whose table row names the CPU build's extra
    Options = OnnxRuntimeGpuOptions

    @classmethod
    def check_runs(cls, models) -> list:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            return []
        import onnxruntime as ort

        if cuda_provider_here(ort) is not None:
            return []
        return [(precision, graph, ()) for precision, graph in models.graphs.items()
                if precision in ("fp32", "fp16")]

    def __init__(self, path, provider: str = "cuda", device: int = 0, session_config: tuple = ()):
        ort = require("onnxruntime", "running ONNX graphs on the GPU")
        if provider not in PROVIDERS:
            raise HinetDeployError(f"ONNX Runtime GPU provider {provider!r}: choose "
                                   f"{' or '.join(PROVIDERS)}")
        self.device = device
        if provider == "cuda":
            why = cuda_provider_here(ort)
            if why is not None:
                raise HinetDeployError(f"the onnxruntime-gpu backend cannot run {Path(path).name} "
                                       f"on the GPU: {why}")
            providers, hook, expected = [(CUDA, {"device_id": device})], None, CUDA
        else:
            hook, expected = self._rtx_plugin(ort), None
            providers = []
        self._open(Path(path), providers, None, True, session_config, before_session=hook)
        running = self.session.get_providers()
        if expected is not None and running[0] != expected:
            raise HinetDeployError(f"ONNX Runtime did not start {expected} for {Path(path).name} "
                                   f"(it runs {', '.join(running)}): refused rather than running "
                                   f"on the CPU")

    def _rtx_plugin(self, ort):
        """Registers NVIDIA's TensorRT-RTX plugin provider; the session options' hook that adds
        its devices."""
        try:
            plugin = __import__(RTX_PLUGIN)
        except ImportError as exc:
            raise HinetDeployError("the tensorrt-rtx provider needs NVIDIA's plugin package: pip "
                                   "install onnxruntime-ep-nv-tensorrt-rtx (RTX GPUs, Ampere or "
                                   "later)") from exc
        name = plugin.get_ep_name()
        try:
            ort.register_execution_provider_library(name, plugin.get_library_path())
        except Exception as exc:  # already registered in this process is fine
            if "already" not in str(exc).lower():
                raise HinetDeployError(f"ONNX Runtime cannot load the TensorRT-RTX provider: "
                                       f"{exc}") from exc
        devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
        if not devices:
            raise HinetDeployError("the TensorRT-RTX provider finds no GPU it runs on here (RTX "
                                   "GPUs of compute capability 8.6, 8.9 and 12.x)")
        return lambda options: options.add_provider_for_devices(devices, {})

    def run_device_impl(self, batch):
        """A torch CUDA tensor in, float32 on the same device out, bound in place: no copy
        through host memory."""
        import torch

        dtype = torch.float16 if self.input_dtype == np.float16 else torch.float32
        x = batch.to(device=f"cuda:{self.device}", dtype=dtype).contiguous()
        out = torch.empty(tuple(x.shape), dtype=dtype, device=x.device)
        binding = self.session.io_binding()
        element = np.float16 if dtype == torch.float16 else np.float32
        binding.bind_input(self.input_name, "cuda", self.device, element, tuple(x.shape),
                           x.data_ptr())
        binding.bind_output(self.output_name, "cuda", self.device, element, tuple(out.shape),
                            out.data_ptr())
        torch.cuda.current_stream(x.device).synchronize()  # ONNX Runtime works on its own stream
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out.float().to(batch.device)
