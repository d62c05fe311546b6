"""Photographs that ship inside the scikit-image wheel: training, calibration and held-out test images
with no download.

The split is fixed so that numbers in the README can be re-run: the demo model never sees HELD_OUT.
"""
from __future__ import annotations

import numpy as np

# Natural photographs and textures used to train the demo denoiser (and to calibrate INT8 engines).
# Grayscale ones are replicated to three channels: they add textures the few colour photos lack.
TRAIN = ("astronaut", "chelsea", "motorcycle_left", "immunohistochemistry", "retina",
         "brick", "grass", "gravel", "moon", "coins", "clock", "page", "text")
# Never used in training or calibration: the demo's and the fidelity report's test images.
HELD_OUT = ("coffee", "rocket", "camera")
# The demo denoiser's noise: Gaussian, sigma 25 on the 0-255 scale, in training, calibration,
# the demo, fidelity and validation alike.
DEMO_NOISE_SIGMA = 25.0


def load_photo(name: str) -> np.ndarray:
    """HxWx3 uint8 RGB of a scikit-image sample photograph."""
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        image = left if name == "motorcycle_left" else right
    else:
        image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def add_gaussian_noise(image_u8: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Noisy uint8 image: clean + N(0, sigma) on the 0-255 scale, clipped and rounded.

    Clipping and rounding make it what a camera or a PNG file really holds, which is what users
    give the Restorer.
    """
    rng = np.random.default_rng(seed)
    noisy = image_u8.astype(np.float64) + rng.normal(0.0, sigma, image_u8.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
