"""Calibration batches for INT8: crops of real images, preprocessed exactly as the Restorer does.

A `CalibrationSet` is a list of (3, H, W) float32 crops in [0, 1]; `CalibrationReader` feeds them to
onnxruntime's quantizer in batches (its CalibrationDataReader protocol: get_next() -> feed or None).
Images come from a folder of the user's (any sizes and formats PIL reads) or, by default
(`hinet_deploy.build.calibration`), from the training photographs of calib.photos with the demo
model's noise, so the activations seen in calibration are the ones the deployed denoiser sees.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.progress import progress_bar, say
from hinet_deploy.export.metadata import INPUT_NAME

DEFAULT_CROP = 256  # the official test crop; also the engines' default optimisation shape
DEFAULT_COUNT = 32  # crops; ORT's entropy calibration histograms settle well before this (README)
CROP_MODES = ("random", "grid")  # crops at random positions, or a regular grid over each image
DEFAULT_CROP_MODE = "random"
# Image files the project reads from folders (calibration, validation pairs): what PIL opens.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def preprocess(rgb_u8: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 in [0,1]: the Restorer's conversion (a test holds them equal)."""
    return np.ascontiguousarray(rgb_u8.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def _read_rgb(path: Path) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError):
        return None


def folder_images(folder: Path, log=None) -> dict[str, np.ndarray]:
    folder = Path(folder)
    if not folder.is_dir():
        raise HinetDeployError(f"calibration folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = {p.name: im for p in files if (im := _read_rgb(p)) is not None}
    unreadable = [p.name for p in files if p.name not in images]
    if unreadable and images:
        (log or say)(f"calibration: left out {len(unreadable)} unreadable file(s) "
                         f"({', '.join(unreadable[:5])}{', ...' if len(unreadable) > 5 else ''})")
    if not images:
        found = len(list(folder.iterdir()))
        raise HinetDeployError(f"calibration folder {folder} has no readable images ({found} entries; "
                               f"looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


@dataclass
class CalibrationSet:
    crops: list[np.ndarray]

    def fingerprint(self) -> str:
        """Changes whenever a pixel of any crop changes: part of the calibration cache's key."""
        digest = hashlib.sha256()
        for crop in self.crops:
            digest.update(crop.tobytes())
        return digest.hexdigest()[:16]


def make_crops(images: dict[str, np.ndarray], crop: int = DEFAULT_CROP, count: int = DEFAULT_COUNT,
               mode: str = DEFAULT_CROP_MODE, seed: int = 0, log=None) -> CalibrationSet:
    """`count` crops of crop x crop: random positions, or a regular grid over each image."""
    log = log or say
    usable = {k: v for k, v in images.items() if v.shape[0] >= crop and v.shape[1] >= crop}
    small = sorted(set(images) - set(usable))
    if small and usable:
        log(f"calibration: left out {len(small)} image(s) smaller than {crop}x{crop} "
            f"({', '.join(small[:5])}{', ...' if len(small) > 5 else ''})")
    if not usable:
        raise HinetDeployError(f"no calibration image is at least {crop}x{crop} "
                               f"(largest: {max(v.shape[1] for v in images.values())}x"
                               f"{max(v.shape[0] for v in images.values())}); use a smaller "
                               f"--calib-crop or larger images")
    if mode not in CROP_MODES:
        raise HinetDeployError(f"unknown crop mode {mode!r}: {' or '.join(CROP_MODES)}")
    rng = np.random.default_rng(seed)
    names = sorted(usable)
    positions = []
    if mode == "grid":
        for name in names:
            h, w = usable[name].shape[:2]
            positions += [(name, t, s) for t in range(0, h - crop + 1, crop)
                          for s in range(0, w - crop + 1, crop)]
        positions = positions[:count] if len(positions) <= count else \
            [positions[i] for i in np.linspace(0, len(positions) - 1, count).round().astype(int)]
    else:
        for i in range(count):
            name = names[i % len(names)]
            h, w = usable[name].shape[:2]
            positions.append((name, int(rng.integers(0, h - crop + 1)),
                              int(rng.integers(0, w - crop + 1))))
    crops = [preprocess(usable[name][t:t + crop, s:s + crop]) for name, t, s in positions]
    return CalibrationSet(crops)


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over a CalibrationSet, with a progress bar."""

    def __init__(self, calib: CalibrationSet, batch: int = 1, input_name: str = INPUT_NAME,
                 progress: bool = True):
        self.calib, self.batch, self.input_name = calib, batch, input_name
        self.position, self.end = 0, len(calib.crops)
        self.bar = progress_bar(len(calib.crops), "calibrating", "crop", quiet=not progress)

    def get_next(self):
        crops = self.calib.crops
        if self.position >= self.end:
            if self.end == len(crops):
                self.bar.close()
            return None
        batch = np.stack(crops[self.position:min(self.position + self.batch, self.end)])
        self.position += len(batch)
        self.bar.update(len(batch))
        return {self.input_name: batch}

    def set_range(self, start_index: int, end_index: int):
        """Feeds crops [start, end) only: onnxruntime calls it to calibrate in strides."""
        self.position, self.end = start_index, min(end_index, len(self.calib.crops))

    def __len__(self):
        return len(self.calib.crops)
