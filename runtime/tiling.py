"""One tiling implementation for every backend: whole image, the official `grids`, smooth blending.

A plan is a list of equally sized windows over the (possibly padded) image. Each window goes through
the network, and the results are accumulated with a per-window weight and normalised. The three modes
differ only in window size, overlap and weight:

- whole: one window, the image padded up to the size multiple. No seams; instance-norm statistics
  of the whole image (the HINet authors' advice where memory allows).
- grids: the official BasicSR test-time tiling (`grids: true, crop_size: 256`): windows of 256 placed
  as its loop places them, overlaps averaged with equal weight. Reproduces the published metrics.
- blend: windows of `tile` with at least `overlap` pixels shared, weighted by raised-cosine ramps over
  the overlap so that neighbouring windows fade into each other and no seam shows. For images too
  large to run whole.

An axis shorter than the window gets one window over the axis padded up to the size multiple, in
every mode, so any image size works.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hinet_deploy.common.errors import HinetDeployError

OFFICIAL_CROP = 256  # crop_size of the official GoPro/REDS/Rain13k test configs
# blend mode: 256, the official crop: the best PSNR/SSIM of every mode and tile size on the held-out
# photographs at 1x, 2x and 4x, and the least memory at 4x (benchmarks/restore_modes.py, README).
DEFAULT_TILE = 256
DEFAULT_MODE = "blend"  # the Restorer's and `restore`'s default, from the same table
DEFAULT_OVERLAP = 32  # two 16-pixel cells: enough context for the 3x3 convs at full resolution
MODES = ("whole", "grids", "blend")


@dataclass(frozen=True)
class TilePlan:
    height: int  # working extent: the image padded where an axis is shorter than the window
    width: int
    tile_h: int
    tile_w: int
    tops: tuple[int, ...]
    lefts: tuple[int, ...]
    ramp: int  # 0: equal weights; else raised-cosine ramps of this length where windows meet

    @property
    def windows(self) -> list[tuple[int, int]]:
        return [(t, left) for t in self.tops for left in self.lefts]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def axis_starts(length: int, tile: int, min_overlap: int) -> list[int]:
    """Window starts along one axis, placed like the official grids loop.

    n = ceil((length - overlap) / (tile - overlap)) windows, stepping by
    ceil((length - tile) / (n - 1)); the window that would pass the end is moved back to end there.
    With min_overlap 0 this is exactly BasicSR's `grids()` placement.
    """
    if length <= tile:
        return [0]
    count = -(-(length - min_overlap) // (tile - min_overlap))
    step = -(-(length - tile) // (count - 1))
    starts, pos = [], 0
    while True:
        if pos + tile >= length:
            starts.append(length - tile)
            return starts
        starts.append(pos)
        pos += step


def _axis(length: int, tile: int | None, multiple: int, overlap: int):
    if tile is None or length <= tile:
        padded = round_up(length, multiple)
        return padded, padded, [0]
    return length, tile, axis_starts(length, tile, overlap)


def make_plan(height: int, width: int, mode: str, multiple: int, tile: int | None = None,
              overlap: int = DEFAULT_OVERLAP) -> TilePlan:
    if mode not in MODES:
        raise HinetDeployError(f"unknown tiling mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "whole":
        tile, overlap = None, 0
    elif mode == "grids":
        tile, overlap = tile or OFFICIAL_CROP, 0
    else:
        tile = tile or DEFAULT_TILE
        if not 0 <= overlap < tile:
            raise HinetDeployError(f"overlap {overlap} must be at least 0 and below the tile {tile}")
    if tile is not None and (tile <= 0 or tile % multiple):
        raise HinetDeployError(f"tile {tile} must be a positive multiple of {multiple}")
    h, th, tops = _axis(height, tile, multiple, overlap)
    w, tw, lefts = _axis(width, tile, multiple, overlap)
    ramp = overlap if mode == "blend" else 0
    return TilePlan(h, w, th, tw, tuple(tops), tuple(lefts), ramp)


def _ramp_weights(extent: int, start: int, tile: int, ramp: int):
    """1-D weights of one window: raised-cosine ramps on the sides where another window overlaps."""
    weight = np.ones(tile, dtype=np.float32)
    if ramp == 0:
        return weight
    # Pixel centres at (i + 0.5) / ramp keep every weight above zero, so each pixel is covered.
    rise = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)).astype(np.float32)
    if start > 0:
        weight[:ramp] *= rise
    if start + tile < extent:
        weight[-ramp:] *= rise[::-1]
    return weight


class NumpyOps:
    """The few array operations tiling needs, on numpy arrays (host memory)."""

    def pad(self, chw, height: int, width: int):
        return np.pad(chw, ((0, 0), (0, height - chw.shape[1]), (0, width - chw.shape[2])),
                      mode="reflect")

    def zeros(self, shape):
        return np.zeros(shape, dtype=np.float32)

    def stack(self, items):
        return np.stack(items)

    def concat(self, items):
        return np.concatenate(items)

    def constant(self, values: np.ndarray):
        return values


class TorchOps:
    """The same operations on torch tensors, on the device the image lives on (GPU pipelines)."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device

    def pad(self, chw, height: int, width: int):
        # torch's reflect pad stops at the input's extent; steps reflect as numpy does beyond it
        functional = self.torch.nn.functional
        while chw.shape[1] < height or chw.shape[2] < width:
            dh = min(height - chw.shape[1], chw.shape[1] - 1)
            dw = min(width - chw.shape[2], chw.shape[2] - 1)
            if dh == dw == 0:  # a 1-pixel axis reflects to itself: repeat it
                return functional.pad(chw[None], (0, width - chw.shape[2], 0,
                                                  height - chw.shape[1]), mode="replicate")[0]
            chw = functional.pad(chw[None], (0, dw, 0, dh), mode="reflect")[0]
        return chw

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.float32, device=self.device)

    def stack(self, items):
        return self.torch.stack(items)

    def concat(self, items):
        return self.torch.cat(items)

    def constant(self, values: np.ndarray):
        return self.torch.from_numpy(values).to(self.device)


NUMPY = NumpyOps()


def ops_for(array):
    """NumpyOps for numpy arrays, TorchOps for torch tensors (on their device)."""
    return NUMPY if isinstance(array, np.ndarray) else TorchOps(array.device)


def pad_to(image_chw, height: int, width: int, ops=NUMPY):
    """Reflect-pads bottom and right: mirrored content keeps instance-norm statistics natural."""
    if tuple(image_chw.shape[1:]) == (height, width):
        return image_chw
    return ops.pad(image_chw, height, width)


def run_plan(image_chw, plan: TilePlan, run_batch: Callable, batch: int = 1):
    """Runs `run_batch` (N,3,th,tw float32 -> same) over the plan and returns the (3,H,W) result.

    `image_chw` is a numpy array or a torch tensor (on any device); the tiles, the accumulation and
    the result stay in that kind of array and on that device.
    """
    ops = ops_for(image_chw)
    channels, height, width = image_chw.shape
    padded = pad_to(image_chw, plan.height, plan.width, ops)
    if len(plan.windows) == 1:  # whole image: no accumulation buffers, no copies
        return run_batch(padded[None])[0, :, :height, :width]
    out = ops.zeros((channels, plan.height, plan.width))
    weight_sum = ops.zeros((plan.height, plan.width))
    windows = plan.windows
    for first in range(0, len(windows), batch):
        group = windows[first:first + batch]
        crops = ops.stack([padded[:, t:t + plan.tile_h, s:s + plan.tile_w] for t, s in group])
        results = run_batch(crops)
        for (t, s), result in zip(group, results):
            wy = _ramp_weights(plan.height, t, plan.tile_h, plan.ramp)
            wx = _ramp_weights(plan.width, s, plan.tile_w, plan.ramp)
            w2 = ops.constant(wy[:, None] * wx[None, :])
            out[:, t:t + plan.tile_h, s:s + plan.tile_w] += result * w2
            weight_sum[t:t + plan.tile_h, s:s + plan.tile_w] += w2
    out /= weight_sum
    return out[:, :height, :width]
