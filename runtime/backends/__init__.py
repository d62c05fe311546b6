"""Backends run a batch N x 3 x H x W float32 -> same shape. They know nothing of images or tiles.

One module per backend, each a `BackendBase` subclass that implements the template's `_impl`
methods (BackendBase's `run`, `run_device` and `close` keep the contract: batch checks, non-finite
outputs refused, one error line) and states its own rules as data: name, model suffixes, extra,
typed options (tiling defaults and worker threads among their fields), what it runs for the
checks, files to ship. Heavy dependencies are imported when a backend is created.

Adding a backend is one module here and one row in BACKENDS: the Restorer, `restore` (and its
options), Ray, the checks and the optional-dependency table read it from there.
"""
from __future__ import annotations

from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import EXTRA_OF
from hinet_deploy.runtime.backends.base import Backend, BackendBase, ModelFiles
from hinet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
from hinet_deploy.runtime.backends.onnxruntime_gpu import OnnxRuntimeGpuBackend
from hinet_deploy.runtime.backends.openvino import OpenVinoBackend
from hinet_deploy.runtime.backends.pytorch import TorchBackend
from hinet_deploy.runtime.backends.tensorrt import TensorRtBackend

# Every backend, by its one name. A model file's default backend is the first row that opens its
# suffix; any other row that opens it is chosen by name (`backend=`).
BACKENDS: dict[str, type[BackendBase]] = {
    cls.name: cls for cls in (OnnxRuntimeBackend, TorchBackend, TensorRtBackend, OpenVinoBackend,
                              OnnxRuntimeGpuBackend)}

__all__ = ["BACKENDS", "Backend", "BackendBase", "ModelFiles", "OnnxRuntimeBackend",
           "OnnxRuntimeGpuBackend", "OpenVinoBackend",
           "TensorRtBackend", "TorchBackend",
           "backend_class", "open_backend", "optional_dependencies"]


def optional_dependencies() -> dict[str, str]:
    """The optional-dependency table, module -> extra: the ground's rows (common.lazy.EXTRA_OF)
    and each backend's own (`requires` and `extra`), so a new backend's row is in it too."""
    return {**EXTRA_OF, **{module: cls.extra for cls in BACKENDS.values() for module in
                           cls.requires}}


def backend_class(path, backend: str | None = None) -> type[BackendBase]:
    """The class that runs the model at `path`: the one named, or the default for its suffix."""
    suffix = Path(path).suffix.lower()
    if backend is not None:
        cls = BACKENDS.get(backend)
        if cls is None:
            raise HinetDeployError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
        if suffix not in cls.suffixes:
            raise HinetDeployError(f"the {backend} backend runs {', '.join(cls.suffixes)} files, "
                                   f"not {Path(path).name}")
        return cls
    for cls in BACKENDS.values():
        if suffix in cls.suffixes:
            return cls
    main = list(dict.fromkeys(cls.suffixes[0] for cls in BACKENDS.values()))  # one per kind
    raise HinetDeployError(f"cannot tell how to run {Path(path).name!r}: expected "
                           f"{', '.join(main[:-1])} or {main[-1]}")


def open_backend(path, backend: str | None = None, *, tiled: bool = False,
                 **options) -> Backend:
    """Opens the model at `path` with `backend` (default: by its suffix: .onnx -> ONNX Runtime,
    .pth/.pt -> PyTorch, .engine/.plan -> the TensorRT its sidecar names). Options the backend does
    not take are refused. `tiled`: it will run tiles, so the backend's tiling defaults apply where
    `options` do not say otherwise."""
    path = Path(path)
    if not path.exists():
        raise HinetDeployError(f"model file {path} does not exist")
    cls = backend_class(path, backend)
    if tiled:
        options = {**cls.tiled_defaults(), **options}
    chosen = cls.make_options(**options)
    return cls(path, **{f.name: getattr(chosen, f.name) for f in cls.option_fields()})
