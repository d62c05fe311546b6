"""Backends run a batch N x 3 x H x W float32 -> same shape. They know nothing of images or tiles.

Every backend keeps one contract (`Backend`): `run`, optionally `run_device`, `close`, and a frozen
`limits` (hinet_deploy.common.limits.SizeLimits) that says what the Restorer must respect. Heavy
dependencies are imported when a backend is created.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import require
from hinet_deploy.common.limits import HINET_SIZE_MULTIPLE, SizeLimits
from hinet_deploy.export.metadata import from_properties
# Preferred order; only those the installed onnxruntime offers are used. The TensorRT EP needs the
# full TensorRT libraries, so it is tried only when asked for explicitly.
ORT_DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


@runtime_checkable
class Backend(Protocol):
    """What the Restorer runs: a path's backend from open_backend, or the caller's own object.
    A backend may also offer `run_device(tensor)` for torch tensors on a GPU."""

    name: str
    limits: SizeLimits

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W float32 in [0, 1] -> the restored batch, same shape, float32."""

    def close(self) -> None:
        """Releases what the backend holds; it is not used afterwards."""


def _width_factor(meta: dict) -> int | None:
    try:
        return int(json.loads(meta["config"])["wf"])
    except (KeyError, ValueError, TypeError):
        return None


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path, providers=None, threads: int | None = None, memory_arena: bool = True):
        ort = require("onnxruntime", "pip install 'hinet-deploy[onnxruntime]'",
                      "running ONNX graphs")
        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # The CPU arena keeps the largest allocations for reuse (fast for repeated whole images);
        # without it one 512x512 gopro tile peaks at 1.72 GB instead of 2.11 GB (README).
        options.enable_cpu_mem_arena = memory_arena
        available = ort.get_available_providers()
        wanted = list(providers) if providers else [p for p in ORT_DEFAULT_PROVIDERS if p in available]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise HinetDeployError(f"onnxruntime here offers {', '.join(available)}, not "
                                   f"{', '.join(missing)}")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise HinetDeployError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = "output" if any(o.name == "output" for o in self.session.get_outputs()) \
            else self.session.get_outputs()[0].name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        meta = from_properties(self.session.get_modelmeta().custom_metadata_map)
        self.limits = SizeLimits(  # dynamic graphs take any batch and size
            multiple=int(meta.get("size_multiple", HINET_SIZE_MULTIPLE)), fixed_batch=dims[0],
            fixed_hw=(dims[2], dims[3]) if dims[2] and dims[3] else None,
            width_factor=_width_factor(meta))

    def run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.input_name: batch.astype(self.input_dtype, copy=False)}
        return self.session.run([self.output_name], feed)[0].astype(np.float32, copy=False)

    def close(self) -> None:
        self.session = None


class TorchBackend:
    """The PyTorch reference: runs a checkpoint directly, FP32, on the CPU or a CUDA device."""

    name = "torch"

    def __init__(self, path, variant: str | None = None, device: str = "cpu"):
        from hinet_deploy.export.checkpoint import load_checkpoint  # the earlier stage; needs torch

        self.torch = require("torch", "pip install 'hinet-deploy[export]' (on Jetson: NVIDIA's torch "
                             "wheel)", "the PyTorch backend")
        self.loaded = load_checkpoint(path, variant)
        self.device = device
        self.net = self.loaded.net.to(device)
        self.limits = SizeLimits(multiple=self.loaded.size_multiple,
                                 width_factor=self.loaded.config.wf)

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.net(x)[1].float().cpu().numpy()

    def run_device(self, batch):
        """A torch tensor in, float32 out on the same device; no copy when the model is there."""
        with self.torch.no_grad():
            return self.net(batch.to(self.device))[1].float().to(batch.device)

    def close(self) -> None:
        self.net = None


def _backend_class(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxRuntimeBackend
    if suffix in (".pth", ".pt"):
        return TorchBackend
    if suffix in (".engine", ".plan"):
        from hinet_deploy.runtime.trt_backend import TensorRtBackend

        return TensorRtBackend
    raise HinetDeployError(f"cannot tell how to run {path.name!r}: expected .onnx, .pth or .engine")


def backend_options(cls) -> list[str]:
    """The keyword options a backend class takes."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, path
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def open_backend(path, **options) -> Backend:
    """Picks the backend by file type: .onnx -> ONNX Runtime, .pth/.pt -> PyTorch, .engine/.plan ->
    the TensorRT (or TensorRT-RTX) its sidecar names. Options the backend does not take are refused."""
    path = Path(path)
    if not path.exists():
        raise HinetDeployError(f"model file {path} does not exist")
    cls = _backend_class(path)
    accepted = backend_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise HinetDeployError(f"{cls.name} ({path.suffix} files) does not take "
                               f"{', '.join(unknown)}; it takes {', '.join(accepted) or 'no options'}")
    return cls(path, **options)
