"""The two image sets of an INT8 build, held apart: calibration (the ranges) and measurement (what
INT8 costs each layer, against FP32), with their options and the calibration's cache key."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hinet_deploy.calib.data import DEFAULT_COUNT, DEFAULT_CROP, DEFAULT_CROP_MODE
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import DEFAULT_OUTPUT_DIR
from hinet_deploy.export.precision import DEFAULT_CALIBRATION, DEFAULT_FLOAT_LAYERS

DEFAULT_CALIB_CACHE_DIR = DEFAULT_OUTPUT_DIR / "calib-cache"
# Measurement: one 256x256 crop of each of the three held-out photographs (the demo model's 93
# layers take about a minute on 2 CPU cores; README).
DEFAULT_MEASURE_COUNT = 3
DEFAULT_MEASURE_CROP = 256
# A first pass for the big variants: one crop of this size ranks every layer before the full
# measurement of the most sensitive ones (--candidates).
DEFAULT_SCREEN_CROP = 64
# The automatic choice's default target, PSNR of the INT8 output against FP32: on the demo model
# all-INT8 gives 43 dB and the three layers that recover most reach 45 (README).
DEFAULT_TARGET_DB = 45.0


@dataclass
class MeasureOptions:
    folder: Path | None = None  # None: the shipped held-out photographs with the demo model's noise
    count: int = DEFAULT_MEASURE_COUNT
    crop: int = DEFAULT_MEASURE_CROP
    seed: int = 0
    candidates: int | None = None  # measure fully only the N most sensitive of a first pass
    screen_crop: int = DEFAULT_SCREEN_CROP


@dataclass
class AutoFloat:
    """`--float-layers auto`: layers chosen by measurement until the target or the budget."""
    target_db: float | None = None  # PSNR of the INT8 output against FP32
    macs_budget: float | None = None  # share of the network's MACs allowed in float
    measure: MeasureOptions = field(default_factory=MeasureOptions)

    def target(self, default: float = DEFAULT_TARGET_DB) -> float | None:
        """The target in force: the one asked for, else `default` (the INT8 target's own) unless
        only a budget is."""
        if self.target_db is None and self.macs_budget is None:
            return default
        return self.target_db


@dataclass
class CalibOptions:
    folder: Path | None = None  # None: the shipped photographs with the demo model's noise
    count: int = DEFAULT_COUNT
    crop: int = DEFAULT_CROP
    mode: str = DEFAULT_CROP_MODE
    method: str = DEFAULT_CALIBRATION
    float_layers: tuple[str, ...] = DEFAULT_FLOAT_LAYERS
    cache_dir: Path = DEFAULT_CALIB_CACHE_DIR
    seed: int = 0
    auto: AutoFloat | None = None  # set: float_layers are chosen by measurement instead


@dataclass
class ImageSet:
    """Images by name, with a hash of each as it was read (before any added noise), so two sets
    can be shown apart."""
    description: str
    images: dict[str, np.ndarray]
    source_hashes: dict[str, str]


def _pixel_hash(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]


def _shipped(names, seed: int, what: str) -> ImageSet:
    from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, add_gaussian_noise, load_photo

    clean = {name: load_photo(name) for name in names}
    return ImageSet(f"{what} photographs ({', '.join(names)}) + Gaussian noise sigma "
                    f"{DEMO_NOISE_SIGMA:g}",
                    {n: add_gaussian_noise(im, DEMO_NOISE_SIGMA, seed + i)
                     for i, (n, im) in enumerate(clean.items())},
                    {n: _pixel_hash(im) for n, im in clean.items()})


def _folder(folder: Path) -> ImageSet:
    from hinet_deploy.calib.data import folder_images

    images = folder_images(folder)
    return ImageSet(f"images in {folder}", images, {n: _pixel_hash(im) for n, im in images.items()})


def calibration_images(calib: CalibOptions) -> ImageSet:
    from hinet_deploy.calib.photos import TRAIN

    return _folder(calib.folder) if calib.folder else _shipped(TRAIN, calib.seed, "training")


def measurement_images(measure: MeasureOptions) -> ImageSet:
    from hinet_deploy.calib.photos import HELD_OUT

    return _folder(measure.folder) if measure.folder else _shipped(HELD_OUT, measure.seed,
                                                                    "held-out")


def check_apart(calibration: ImageSet, measurement: ImageSet) -> None:
    """Refuses a measurement that shares an image (the same pixels) with the calibration."""
    by_hash = {h: n for n, h in calibration.source_hashes.items()}
    shared = [(n, by_hash[h]) for n, h in measurement.source_hashes.items() if h in by_hash]
    if shared:
        listed = ", ".join(f"{m} (calibration: {c})" for m, c in shared[:3])
        raise HinetDeployError(f"{len(shared)} measurement image(s) are also calibration images: "
                               f"{listed}; INT8 would be judged on what it was calibrated on. "
                               f"Measure on other images (--images / --measure-images)")


def calibration_crops(calib: CalibOptions, images: ImageSet | None = None):
    """The calibration crops (`images`: the calibration images where the caller has read them
    already); their fingerprint keys every cache made from them."""
    from hinet_deploy.calib.data import make_crops

    images = images or calibration_images(calib)
    return make_crops(images.images, calib.crop, calib.count, calib.mode, calib.seed)


def calibration_reader(calib: CalibOptions, images: ImageSet | None = None):
    """onnxruntime's data reader over the calibration crops, and the crops' fingerprint."""
    from hinet_deploy.calib.data import CalibrationReader

    crops = calibration_crops(calib, images)
    return CalibrationReader(crops), crops.fingerprint()


def calibration_cache(calib: CalibOptions, graph_sha256: str, fingerprint: str) -> Path:
    """Where the ranges of this graph on these crops are kept (one file per graph and crops)."""
    return Path(calib.cache_dir) / f"{graph_sha256[:16]}-{calib.method}-{fingerprint}.json"
