"""Restorer: images of any size in, restored images of the same size and type out.

    from hinet_deploy.runtime import Restorer
    with Restorer("hinet.onnx") as restore:          # mode="whole" | "grids" | "blend"
        clean = restore(noisy_uint8_hxwx3)

numpy images come back as numpy; torch or cupy images on a GPU come back as the same kind of array
on the same device, converted and tiled there (runtime.device). Backends that run on the GPU
(TensorRT, PyTorch on CUDA) take them without a copy; ONNX Runtime gets them through host memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.limits import SizeLimits
from hinet_deploy.runtime.backends import open_backend
from hinet_deploy.runtime.device import as_torch, from_network_device, is_device_array, like, to_network_device
from hinet_deploy.runtime.images import from_network, to_network
from hinet_deploy.runtime.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, TilePlan, make_plan, ops_for, run_plan

DEFAULT_BATCH = 4  # tiles a call in tiled modes; whole-image mode always runs one image


class Restorer:
    """Runs a HINet graph (or checkpoint) over images, handling size, type and tiling.

    mode: "whole" (default) pads to the size multiple and runs the image at once; "grids" is the
    official 256-crop averaging that reproduces published metrics; "blend" runs overlapping tiles
    blended with smooth weights, for images too large to run whole.
    """

    def __init__(self, model_path, *, mode: str = "whole", tile: int | None = None,
                 overlap: int = DEFAULT_OVERLAP, batch: int = DEFAULT_BATCH, **backend_options):
        if batch < 1:
            raise HinetDeployError(f"batch must be at least 1, not {batch}")
        if mode != "whole" and isinstance(model_path, (str, Path)) and \
                str(model_path).lower().endswith(".onnx"):
            # Tiled modes exist to bound memory: trade ORT's arena for a lower peak.
            backend_options.setdefault("memory_arena", False)
        # A path picks its backend by file type; an object with run() and limits (one of
        # runtime.backends, or the caller's own: runtime.backends.Backend) is used as it is.
        self.backend = model_path if hasattr(model_path, "run") else \
            open_backend(model_path, **backend_options)
        limits = getattr(self.backend, "limits", None)
        if not isinstance(limits, SizeLimits):
            raise HinetDeployError(f"{type(self.backend).__name__} has no `limits` "
                                   f"(hinet_deploy.common.limits.SizeLimits): a backend must say "
                                   f"what input it takes")
        self.limits = limits
        self.mode, self.tile, self.overlap = mode, tile, overlap
        fixed = limits.fixed_hw
        if fixed is not None:
            if fixed[0] != fixed[1] or mode == "whole":
                raise HinetDeployError(
                    f"{model_path} has a fixed input of {fixed[0]}x{fixed[1]}: use mode='blend' or "
                    f"'grids' with a square fixed size, or export with dynamic shapes")
            self.tile = fixed[0]
        if limits.max_hw is not None and mode == "blend" and tile is None:
            self.tile = min(DEFAULT_TILE, *limits.max_hw)  # engines: stay in the profile
        self.batch = limits.fixed_batch or min(batch, limits.max_batch or batch)
        make_plan(64, 64, mode, limits.multiple, self.tile, overlap)  # validates early

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
        elif hasattr(self.backend, "run_device"):
            out = self.backend.run_device(crops)
        else:  # a host backend: through host memory
            import torch

            out = torch.from_numpy(self.backend.run(crops.cpu().numpy())).to(crops.device)
        return out[:count]

    def restore_chw(self, chw):
        """3xHxW float32 in [0,1] -> 3xHxW float32 (unclipped): the network's own format. A numpy
        array, or a torch tensor on a GPU (the result stays there)."""
        plan = self.plan(chw.shape[1], chw.shape[2])
        return run_plan(chw, plan, self._run_batch, self.batch)

    def __call__(self, image):
        if is_device_array(image):
            import torch

            with torch.no_grad():
                chw, layout = to_network_device(as_torch(image))
                return like(from_network_device(self.restore_chw(chw), layout), image)
        chw, layout = to_network(image)
        return from_network(self.restore_chw(chw), layout)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
