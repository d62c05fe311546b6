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


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """SSIM of Wang et al. (2004) as the restoration papers compute it: 11x11 Gaussian window,
    sigma 1.5, population statistics, each RGB channel separately, then averaged."""
    from skimage.metrics import structural_similarity

    if data_range is None:
        data_range = 255.0 if a.dtype == np.uint8 else 1.0
    return float(structural_similarity(a.astype(np.float64), b.astype(np.float64),
                                       channel_axis=2 if a.ndim == 3 else None,
                                       data_range=data_range, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))
