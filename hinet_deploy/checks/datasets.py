"""Degraded/clean image pairs for validation: official test-set layouts, clean folders degraded with a
stated recipe, or the shipped held-out photographs.

Pairs layout (GoPro, SIDD, Rain13k test sets and most BasicSR datasets): somewhere under DIR, folders
named for the degraded images (input, blur, noisy, lq, rain, degraded) beside folders named for the
clean ones (target, sharp, gt, clean, norain, groundtruth); files are paired by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from hinet_deploy.calib.data import IMAGE_SUFFIXES
from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime.images import read_image

DEGRADED_DIRS = {"input", "blur", "noisy", "lq", "rain", "degraded"}
CLEAN_DIRS = {"target", "sharp", "gt", "clean", "norain", "groundtruth"}


@dataclass
class Pair:
    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]  # -> (degraded, clean), HxWx3 uint8


@dataclass
class Dataset:
    description: str
    pairs: list[Pair]
    unmatched: list[str] = field(default_factory=list)  # files without their other half

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8: grayscale replicated, alpha dropped; other dtypes refused."""
    if image.ndim == 2:
        image = image[..., None]
    image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
    if image.dtype != np.uint8:
        raise HinetDeployError(f"8-bit images are needed here, not {image.dtype}")
    return np.ascontiguousarray(image)


def _images(folder: Path, recursive: bool = False) -> dict[str, Path]:
    """Image files by their path inside `folder` (sub-folders too where `recursive`, as restore
    reads a folder)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return {p.relative_to(folder).as_posix(): p for p in sorted(found)
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def paired_folder(root: Path) -> Dataset | None:
    """Pairs found under root, or None where root holds no degraded/clean folder pair."""
    pairs, unmatched = [], []
    for degraded_dir in sorted(p for p in root.rglob("*") if p.is_dir()
                               and p.name.lower() in DEGRADED_DIRS):
        clean_dir = next((d for d in degraded_dir.parent.iterdir()
                          if d.is_dir() and d.name.lower() in CLEAN_DIRS), None)
        if clean_dir is None:
            unmatched.append(f"{degraded_dir.relative_to(root)}/ (no clean folder beside it)")
            continue
        clean, degraded = _images(clean_dir, True), _images(degraded_dir, True)
        for name, path in degraded.items():
            if name in clean:
                rel = path.relative_to(root)
                pairs.append(Pair(str(rel), lambda p=path, c=clean[name]: (
                    as_rgb8(read_image(p)), as_rgb8(read_image(c)))))
        unmatched += [str(p.relative_to(root)) for n, p in {**degraded, **clean}.items()
                      if (n in degraded) != (n in clean)]
    return Dataset(f"pairs under {root}", pairs, unmatched) if pairs else None


def noisy_clean_folder(root: Path, sigma: float, seed: int) -> Dataset:
    images = _images(root, recursive=True)
    if not images:
        raise HinetDeployError(f"{root} holds no images and no degraded/clean folder pairs "
                               f"(looked for {', '.join(sorted(DEGRADED_DIRS))} beside "
                               f"{', '.join(sorted(CLEAN_DIRS))})")

    def load(path, index):
        clean = as_rgb8(read_image(path))
        return add_gaussian_noise(clean, sigma, seed + index), clean

    return Dataset(f"clean images in {root} + Gaussian noise sigma {sigma:g} (seed {seed})",
                   [Pair(n, lambda p=p, i=i: load(p, i)) for i, (n, p) in enumerate(images.items())])


def shipped_photos(sigma: float = DEMO_NOISE_SIGMA, seed: int = 0) -> Dataset:
    def load(name, index):
        clean = load_photo(name)
        return add_gaussian_noise(clean, sigma, seed + index), clean

    return Dataset(f"held-out scikit-image photographs ({', '.join(HELD_OUT)}) + Gaussian noise "
                   f"sigma {sigma:g} (seed {seed})",
                   [Pair(n, lambda n=n, i=i: load(n, i)) for i, n in enumerate(HELD_OUT)])


def open_dataset(root: Path | None, sigma: float = DEMO_NOISE_SIGMA, seed: int = 0) -> Dataset:
    if root is None:
        return shipped_photos(sigma, seed)
    root = Path(root)
    if not root.is_dir():
        raise HinetDeployError(f"dataset folder {root} does not exist")
    return paired_folder(root) or noisy_clean_folder(root, sigma, seed)
