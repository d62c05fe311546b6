"""Image-quality metrics with the official definitions: RGB, no border crop, data range of the type."""
from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels; inf for identical images."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR of arrays of different shapes {a.shape} and {b.shape}")
    if data_range is None:
        data_range = 255.0 if a.dtype == np.uint8 else 1.0
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
