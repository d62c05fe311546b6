"""Backends run a batch N x 3 x H x W float32 -> same shape. They know nothing of images or tiles.

Each backend says what the Restorer must respect: the size multiple, and the fixed input extent or
batch if the graph has them. Heavy dependencies are imported when a backend is created.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hinet_deploy.errors import HinetDeployError
from hinet_deploy.lazy import require

DEFAULT_SIZE_MULTIPLE = 16  # four stride-2 downsamplings; used when a graph carries no metadata
# Preferred order; only those the installed onnxruntime offers are used. The TensorRT EP needs the
# full TensorRT libraries, so it is tried only when asked for explicitly.
ORT_DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend:
    name = "onnxruntime"
    max_batch = None  # dynamic graphs take any batch and size
    max_hw = None

    def __init__(self, path, providers=None, threads: int | None = None, memory_arena: bool = True):
        ort = require("onnxruntime", "pip install onnxruntime", "running ONNX graphs")
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
        self.fixed_batch = dims[0]
        self.fixed_hw = (dims[2], dims[3]) if dims[2] and dims[3] else None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.size_multiple = int(meta.get("hinet.size_multiple", DEFAULT_SIZE_MULTIPLE))

    def run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.input_name: batch.astype(self.input_dtype, copy=False)}
        return self.session.run([self.output_name], feed)[0].astype(np.float32, copy=False)

    def close(self) -> None:
        self.session = None


class TorchBackend:
    """The PyTorch reference: runs a checkpoint directly, FP32, on the CPU or a CUDA device."""

    name = "torch"
    fixed_batch = None
    fixed_hw = None
    max_batch = None
    max_hw = None

    def __init__(self, path, variant: str | None = None, device: str = "cpu"):
        from export.checkpoint import load_checkpoint  # the earlier stage; needs torch

        self.torch = require("torch", "pip install torch==2.13.0", "the PyTorch backend")
        self.loaded = load_checkpoint(path, variant)
        self.device = device
        self.net = self.loaded.net.to(device)
        self.size_multiple = self.loaded.size_multiple

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


def open_backend(path, **options):
    """Picks the backend by file type: .onnx -> ONNX Runtime, .pth/.pt -> PyTorch, .engine/.plan ->
    the TensorRT (or TensorRT-RTX) its sidecar names."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise HinetDeployError(f"model file {path} does not exist")
    if suffix == ".onnx":
        return OnnxRuntimeBackend(path, **options)
    if suffix in (".pth", ".pt"):
        return TorchBackend(path, **options)
    if suffix in (".engine", ".plan"):
        from runtime.trt_backend import TensorRtBackend

        return TensorRtBackend(path, **options)
    raise HinetDeployError(f"cannot tell how to run {path.name!r}: expected .onnx, .pth or .engine")
