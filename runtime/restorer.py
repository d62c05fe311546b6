"""Restorer: images of any size in, restored images of the same size and type out.

    from runtime import Restorer
    with Restorer("hinet.onnx") as restore:          # mode="whole" | "grids" | "blend"
        clean = restore(noisy_uint8_hxwx3)
"""
from __future__ import annotations

import numpy as np

from hinet_deploy.errors import HinetDeployError
from runtime.backends import open_backend
from runtime.images import from_network, to_network
from runtime.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, TilePlan, make_plan, run_plan

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
        if mode != "whole" and str(model_path).lower().endswith(".onnx"):
            # Tiled modes exist to bound memory: trade ORT's arena for a lower peak.
            backend_options.setdefault("memory_arena", False)
        self.backend = open_backend(model_path, **backend_options)
        self.mode, self.tile, self.overlap = mode, tile, overlap
        fixed = self.backend.fixed_hw
        if fixed is not None:
            if fixed[0] != fixed[1] or mode == "whole":
                raise HinetDeployError(
                    f"{model_path} has a fixed input of {fixed[0]}x{fixed[1]}: use mode='blend' or "
                    f"'grids' with a square fixed size, or export with dynamic shapes")
            self.tile = fixed[0]
        if self.backend.max_hw is not None and mode == "blend" and tile is None:
            self.tile = min(DEFAULT_TILE, *self.backend.max_hw)  # engines: stay in the profile
        self.batch = self.backend.fixed_batch or min(batch, self.backend.max_batch or batch)
        make_plan(64, 64, mode, self.backend.size_multiple, self.tile, overlap)  # validates early

    def plan(self, height: int, width: int) -> TilePlan:
        return make_plan(height, width, self.mode, self.backend.size_multiple, self.tile, self.overlap)

    def _run_batch(self, crops: np.ndarray) -> np.ndarray:
        fixed = self.backend.fixed_batch
        if fixed is None or len(crops) == fixed:
            return self.backend.run(crops)
        padded = np.concatenate([crops, np.repeat(crops[-1:], fixed - len(crops), axis=0)])
        return self.backend.run(padded)[:len(crops)]

    def restore_chw(self, chw: np.ndarray) -> np.ndarray:
        """3xHxW float32 in [0,1] -> 3xHxW float32 (unclipped): the network's own format."""
        plan = self.plan(chw.shape[1], chw.shape[2])
        return run_plan(chw, plan, self._run_batch, self.batch)

    def __call__(self, image) -> np.ndarray:
        chw, layout = to_network(image)
        return from_network(self.restore_chw(chw), layout)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
