"""What a model asks of its input, stated once: every stage reads it, none re-derives it."""
from __future__ import annotations

from dataclasses import dataclass

# HINet downsamples four times by 2, so H and W must be multiples of 2**4. Graphs and engines record
# their own multiple; this is the value for one that records none.
HINET_SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class SizeLimits:
    """The input a model or engine takes: N x 3 x H x W with H, W multiples of `multiple`; a fixed
    batch or extent where the graph has one; the largest batch and extent an engine's profile
    allows. Callers pad and tile by it (as spandrel's model descriptors are used)."""

    multiple: int = HINET_SIZE_MULTIPLE
    fixed_batch: int | None = None
    fixed_hw: tuple[int, int] | None = None
    max_batch: int | None = None
    max_hw: tuple[int, int] | None = None
    width_factor: int | None = None  # the network's width (wf): sizes its activations in memory
