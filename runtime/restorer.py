"""Restorer: images of any size in, restored images of the same size and type out.

    from hinet_deploy.runtime import Restorer
    with Restorer("hinet.onnx") as restore:          # mode="blend" (256 tiles) | "grids" | "whole"
        clean = restore(noisy_uint8_hxwx3)

numpy images come back as numpy; torch or cupy images on a GPU come back as the same kind of array
on the same device, converted and tiled there (runtime.device). Backends that run on the GPU
(TensorRT, PyTorch on CUDA) take them without a copy; ONNX Runtime gets them through host memory.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterable, Iterator

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.limits import SizeLimits
from hinet_deploy.common.memory import DEFAULT_BUDGET_SHARE, available_bytes, estimated_run_bytes
from hinet_deploy.runtime.backends import BackendBase, open_backend
from hinet_deploy.runtime.backends.base import non_finite_count
from hinet_deploy.runtime.device import as_torch, from_network_device, is_device_array, like, to_network_device
from hinet_deploy.runtime.images import from_network, to_network
from hinet_deploy.runtime.stream import DEFAULT_DEPTH, pipelined
from hinet_deploy.runtime.tiling import (DEFAULT_MODE, DEFAULT_OVERLAP, DEFAULT_TILE, TilePlan,
                                         make_plan, ops_for, pad_to, run_plan)

DEFAULT_BATCH = 4  # tiles a call in tiled modes; whole-image mode always runs one image


def _amount(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _whole(name: str, value, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise HinetDeployError(f"{name} must be a whole number, not {type(value).__name__} "
                               f"{value!r}")
    if value < low:
        raise HinetDeployError(f"{name} must be at least {low}, not {value}")


def _check_options(mode, tile, overlap, batch, memory_budget_mb, backend_options) -> None:
    """The Restorer's options, checked when it is made, not at its first call: types and ranges."""
    from hinet_deploy.runtime.tiling import MODES

    if mode not in MODES:
        raise HinetDeployError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    _whole("tile", tile, 1, allow_none=True)
    _whole("overlap", overlap, 0)
    _whole("batch", batch, 1)
    if "threads" in backend_options:
        _whole("threads", backend_options["threads"], 1, allow_none=True)
    if memory_budget_mb is not None and (isinstance(memory_budget_mb, bool) or not isinstance(
            memory_budget_mb, (int, float)) or not memory_budget_mb > 0):
        raise HinetDeployError(f"memory_budget_mb must be a number above 0 (or None for a share "
                               f"of the memory available), not {memory_budget_mb!r}")


def _finite_or_refused(out, backend):
    """`out`, where every value is finite; else one error naming the backend."""
    if non_finite_count(out):
        raise HinetDeployError(f"{type(backend).__name__} returned values that are NaN or "
                               f"infinite: the model or the input is broken; nothing was written "
                               f"from it")
    return out


class Restorer:
    """Runs a HINet graph (or checkpoint, or engine) over images, handling size, type and tiling.

    backend: a name from runtime.backends.BACKENDS; default: the model file's suffix decides.
    mode: "blend" (default) runs overlapping tiles (`tile`, default 256) blended with smooth
    weights: the best measured quality and, from 2x the tile size up, the least memory; "grids" is
    the official 256-crop averaging that reproduces published metrics; "whole" pads to the size
    multiple and runs the image at once.
    Other keyword options go to the backend (ONNX Runtime's `threads`, PyTorch's `device`, ...).
    """

    def __init__(self, model_path, *, backend: str | None = None, mode: str = DEFAULT_MODE,
                 tile: int | None = None,
                 overlap: int = DEFAULT_OVERLAP, batch: int = DEFAULT_BATCH,
                 memory_budget_mb: float | None = None,
                 on_tiling: Callable[[str], None] | None = None, **backend_options):
        _check_options(mode=mode, tile=tile, overlap=overlap, batch=batch,
                       memory_budget_mb=memory_budget_mb, backend_options=backend_options)
        self.closed = False
        if hasattr(model_path, "run"):
            # An object with run() and limits (the caller's own runtime.backends.Backend) is used
            # as it is.
            self.backend = model_path
        else:
            self.backend = open_backend(model_path, backend, tiled=mode != "whole",
                                        **backend_options)
        limits = getattr(self.backend, "limits", None)
        if not isinstance(limits, SizeLimits):
            raise HinetDeployError(f"{type(self.backend).__name__} has no `limits` "
                                   f"(hinet_deploy.common.limits.SizeLimits): a backend must say "
                                   f"what input it takes")
        self.limits = limits
        # Backends of the table check their own output (BackendBase.run); a caller's own object
        # is checked here, so that NaN or inf never becomes an image from any backend.
        self.checked_backend = isinstance(self.backend, BackendBase)
        self.on_device = getattr(self.backend, "runs_on_device", hasattr(self.backend, "run_device"))
        self.mode, self.tile, self.overlap = mode, tile, overlap
        self.memory_budget_mb = memory_budget_mb
        self.on_tiling = on_tiling or (lambda message: warnings.warn(message, stacklevel=3))
        fixed = limits.fixed_hw
        if fixed is not None:
            if fixed[0] != fixed[1] or mode == "whole":
                raise HinetDeployError(
                    f"{model_path} has a fixed input of {fixed[0]}x{fixed[1]}: use mode='blend' or "
                    f"'grids' with a square fixed size, or export with dynamic shapes")
            self.tile = fixed[0]
            if mode == "blend" and overlap >= self.tile:  # a small fixed graph: half-tile overlap
                self.overlap = self.tile // 2
        if limits.max_hw is not None and mode == "blend" and tile is None:
            self.tile = min(DEFAULT_TILE, *limits.max_hw)  # engines: stay in the profile
        self.batch = limits.fixed_batch or min(batch, limits.max_batch or batch)
        make_plan(64, 64, mode, limits.multiple, self.tile, self.overlap)  # validates early

    def plan(self, height: int, width: int) -> TilePlan:
        return make_plan(height, width, self.mode, self.limits.multiple, self.tile, self.overlap)

    def _run_batch(self, crops):
        """N x 3 x h x w crops (numpy, or a torch tensor on a GPU) through the backend."""
        fixed = self.limits.fixed_batch
        count = len(crops)
        if fixed is not None and count != fixed:  # repeat the last crop up to the graph's batch
            crops = ops_for(crops).concat([crops] + [crops[-1:]] * (fixed - count))
        if isinstance(crops, np.ndarray):
            out = self.backend.run(crops)
        elif self.on_device:
            out = self.backend.run_device(crops)
        else:  # a host backend: through host memory
            import torch

            out = torch.from_numpy(self.backend.run(crops.cpu().numpy())).to(crops.device)
        if not self.checked_backend:
            out = _finite_or_refused(out, self.backend)
        return out[:count]

    def guarded_plan(self, height: int, width: int) -> TilePlan:
        """The plan, except that a whole image whose run would need more host memory than the budget
        (memory_budget_mb; default: a share of what is available now) runs in blend tiles instead,
        and on_tiling (default: a warning) says so: better tiles than death in the allocator."""
        plan = self.plan(height, width)
        wf = self.limits.width_factor
        if self.mode != "whole" or wf is None:
            return plan
        need_mb = estimated_run_bytes(wf, plan.height * plan.width) / 2**20
        budget_mb = self.memory_budget_mb
        if budget_mb is None:
            available = available_bytes()
            budget_mb = None if available is None else available / 2**20 * DEFAULT_BUDGET_SHARE
        if budget_mb is None or need_mb <= budget_mb:
            return plan
        tile = self.tile or DEFAULT_TILE
        self.on_tiling(f"{width}x{height} would need about {_amount(need_mb)} run whole, over the "
                       f"memory budget of {_amount(budget_mb)}: restoring it in blend tiles of {tile} "
                       f"instead")
        return make_plan(height, width, "blend", self.limits.multiple, tile, self.overlap)

    def restore_chw(self, chw, guard: bool = False):
        """3xHxW float32 in [0,1] -> 3xHxW float32 (unclipped): the network's own format. A numpy
        array, or a torch tensor on a GPU (the result stays there). `guard`: the host-memory guard
        of guarded_plan."""
        height, width = chw.shape[1], chw.shape[2]
        fixed = self.limits.fixed_hw
        if fixed is not None and (height < fixed[0] or width < fixed[1]):
            # A graph of a fixed extent takes nothing smaller: mirror the image out to it, then
            # crop the result back.
            big = pad_to(chw, max(height, fixed[0]), max(width, fixed[1]), ops_for(chw))
            return self.restore_chw(big, guard)[:, :height, :width]
        plan = self.guarded_plan(height, width) if guard else self.plan(height, width)
        return run_plan(chw, plan, self._run_batch, self.batch)

    def __call__(self, image):
        if self.closed:
            raise HinetDeployError("this Restorer was closed: make a new one")
        if is_device_array(image):
            import torch

            with torch.no_grad():
                chw, layout = to_network_device(as_torch(image))
                return like(from_network_device(self.restore_chw(chw), layout), image)
        chw, layout = to_network(image)
        return from_network(self.restore_chw(chw, guard=True), layout)

    def stream(self, frames: Iterable, depth: int = DEFAULT_DEPTH) -> Iterator:
        """Restores an iterable of images (numpy frames from a decoder, a camera, a generator) and
        yields the results in order. The next frames are read in one background thread and restored
        in another while the caller handles the last result, at most `depth` waiting in each
        stage, so decoding, inference and the caller's writing overlap and memory stays bounded.

            with Restorer("gopro.onnx") as restorer:
                for clean in restorer.stream(decoder_frames()):
                    encoder.write(clean)
        """
        _whole("depth", depth, 1)
        try:
            frames = iter(frames)
        except TypeError:
            raise HinetDeployError(f"stream() takes an iterable of images (a list, a generator), "
                                   f"not {type(frames).__name__}") from None
        return pipelined(self, frames, depth)

    def close(self) -> None:
        if not self.closed:
            self.backend.close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
