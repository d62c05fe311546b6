"""Image arrays in and out of the network's format (3xHxW float32 in [0,1]), and image files.

The network restores RGB. Grayscale images are restored as three equal channels and averaged back;
an alpha channel is passed through untouched. The output has the input's shape and dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hinet_deploy.common.errors import HinetDeployError

_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# How far a float image may stray outside [0, 1] before it is refused: resampling a [0, 1] image
# (bicubic, Lanczos) overshoots by a few percent, which is clipped; 0-255 data is refused.
FLOAT_SLACK = 0.25
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class ImageLayout:
    """How the caller's array was laid out, to give the result back the same way."""

    shape: tuple[int, ...]
    dtype: np.dtype
    gray: bool
    alpha: np.ndarray | None


def check_image(shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuses, with the reason, what the Restorer cannot take; numpy and GPU arrays alike."""
    if dtype not in _SCALE and dtype not in _FLOATS:
        raise HinetDeployError(f"image dtype {dtype} is not supported: give uint8, uint16 or "
                               f"float in [0, 1]")
    hwc = shape + (1,) if len(shape) == 2 else shape
    if len(hwc) != 3 or hwc[2] not in (1, 3, 4):
        raise HinetDeployError(f"image of shape {tuple(shape)} is not HxW, HxWx1, HxWx3 (RGB) or "
                               f"HxWx4 (RGBA); channels go last")
    if hwc[0] < 1 or hwc[1] < 1:
        raise HinetDeployError(f"image of shape {tuple(shape)} is empty")


def scale_of(dtype: np.dtype) -> float | None:
    """What 1.0 is in this integer dtype; None for floats, already in [0, 1]."""
    return _SCALE.get(np.dtype(dtype))


def _check_float_range(chw: np.ndarray) -> None:
    """Floats are read as [0, 1]; a float image on the 0-255 scale would be clipped to garbage."""
    low, high = float(chw.min()), float(chw.max())  # NaN propagates into both
    if not (np.isfinite(low) and np.isfinite(high)):
        raise HinetDeployError("float image holds NaN or infinite values")
    if low < -FLOAT_SLACK or high > 1 + FLOAT_SLACK:
        hint = " (0-255 values: divide by 255, or pass uint8)" if high > 2 else ""
        raise HinetDeployError(f"float image spans {low:g} to {high:g}, but float images are read "
                               f"as [0, 1]{hint}")


def to_network(image) -> tuple[np.ndarray, ImageLayout]:
    """HxW, HxWx1, HxWx3 or HxWx4 uint8/uint16/float array -> (3xHxW float32 in [0,1], layout)."""
    if isinstance(image, (list, tuple)):
        raise HinetDeployError(f"a Restorer call restores one image (an HxWx3 array), not a "
                               f"{type(image).__name__} of {len(image)}: call it on each, or pass "
                               f"them to restorer.stream(images), which keeps their order")
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        raise HinetDeployError(f"a Restorer call takes an image array, not the path {image!r}: "
                               f"read it with hinet_deploy.runtime.images.read_image, or restore "
                               f"files with `hinet-deploy restore`")
    image = np.asarray(image)
    check_image(image.shape, image.dtype)
    original_shape = image.shape
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    alpha = image[..., 3].copy() if channels == 4 else None
    rgb = np.repeat(image, 3, axis=2) if channels == 1 else image[..., :3]
    scale = scale_of(image.dtype)
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    if scale:
        chw /= np.float32(scale)
    else:
        _check_float_range(chw)
    return chw, ImageLayout(original_shape, image.dtype, channels == 1, alpha)


def from_network(chw: np.ndarray, layout: ImageLayout) -> np.ndarray:
    """3xHxW float32 result -> the caller's layout and dtype, clipped to the valid range.

    Works in place on `chw` (the network's own output buffer): a 4K image is 100 MB a copy.
    """
    np.clip(chw, 0.0, 1.0, out=chw)
    scale = scale_of(layout.dtype)
    if scale:
        chw *= np.float32(scale)
        np.rint(chw, out=chw)
    hwc = chw.transpose(1, 2, 0)
    if layout.gray:
        hwc = np.rint(hwc.mean(axis=2, keepdims=True)) if scale else hwc.mean(axis=2, keepdims=True)
    out = hwc.astype(layout.dtype)
    if layout.alpha is not None:
        out = np.concatenate([out, layout.alpha[..., None]], axis=2)
    return out.reshape(layout.shape)


def read_image(path) -> np.ndarray:
    """The pixels of an image file (runtime.image_files: upright, 8 or 16 bits, as HxW[x3|x4])."""
    from hinet_deploy.runtime.image_files import read_image_file

    return read_image_file(path).pixels


def write_image(path, image: np.ndarray) -> None:
    """Writes atomically; the format follows the file extension (PNG keeps every bit)."""
    from hinet_deploy.runtime.image_files import write_image_file

    write_image_file(path, image)
