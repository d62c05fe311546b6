"""Image files in and out with what makes them the user's: bit depth, orientation, colour profile, EXIF.

Pillow reads and writes 8-bit images and 16-bit grayscale, but reads a 16-bit RGB PNG or TIFF as
8 bits without a word; those go through pypng and tifffile instead, so 16 bits stay 16 bits.
EXIF orientation is applied on reading (the pixels come upright) and reset to 1 in the EXIF written
back; the ICC profile is carried over wherever the format holds one (PNG, JPEG, TIFF, WebP) and EXIF
where Pillow writes it (PNG, JPEG, WebP, 8-bit TIFF; pypng output gets its eXIf chunk by hand).
A file with several frames (animated GIF or WebP, multi-page TIFF) is refused, never cut silently to
its first frame.

Images keep their mode. The network restores RGB (grey as three equal channels), so some modes are
restored through another and converted back on writing: CMYK through RGB with the file's embedded
ICC profile where it has one (Pillow's plain conversion otherwise, which keeps the colour but not
the split between black and CMY); a palette image through RGB(A), then quantised to at most 256
colours again with its transparency; 1-bit through grey, thresholded at the middle again; grey with
alpha through RGBA, grey again as the mean of the channels, its alpha untouched.

Every file is encoded in memory and written whole (runtime files go through
common.files.write_whole: size on disk checked after fsync) before it gets its name.
"""
from __future__ import annotations

import contextlib
import io
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.files import atomic_path, not_regular, write_whole
from hinet_deploy.common.untrusted import check_pixels

# Formats restored and written back as themselves (Pillow's names), by file extension.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
           ".bmp": "BMP", ".webp": "WEBP", ".ppm": "PPM", ".gif": "GIF"}
DEFAULT_JPEG_QUALITY = 95  # also WebP's; high: a restoration should not be undone by its encoder
_ORIENTATION = 0x0112  # the EXIF tag
_METADATA_FORMATS = {"PNG", "JPEG", "TIFF", "WEBP"}  # Pillow writes icc_profile and exif for these


@dataclass
class ImageFile:
    pixels: np.ndarray  # HxW, HxWx3 or HxWx4, uint8 or uint16, upright
    format: str  # Pillow's name: PNG, JPEG, TIFF, BMP, WEBP, PPM
    icc: bytes | None = None
    exif: bytes | None = None  # Pillow's Exif.tobytes() ("Exif\0\0" + TIFF), orientation 1
    mode: str = ""  # Pillow's mode of the file ("CMYK", "P", "1", "LA", ...): written back so
    notes: list = field(default_factory=list)  # what reading it found that the user should know


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as EXIF orientation 1..8 says they are to be shown (Pillow's exif_transpose)."""
    swap = pixels.swapaxes(0, 1)
    turned = {2: pixels[:, ::-1], 3: pixels[::-1, ::-1], 4: pixels[::-1], 5: swap,
              6: swap[:, ::-1], 7: swap[::-1, ::-1], 8: swap[::-1]}.get(orientation, pixels)
    return np.ascontiguousarray(turned)


def _is_16bit_colour(img) -> bool:
    if img.format == "PNG":
        return any(";16" in str(tile.args) for tile in img.tile) and img.mode != "I;16"
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16 and img.mode != "I;16"
    return False


def _read_16bit(path: Path, fmt: str) -> np.ndarray:
    if fmt == "PNG":
        import png

        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(height, width,
                                                                             info["planes"])
    import tifffile

    pixels = tifffile.imread(str(path))
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise HinetDeployError(f"{path}: a {pixels.dtype} TIFF of shape {pixels.shape} is not an "
                               f"RGB(A) image (planar or multi-sample TIFFs are not supported)")
    return pixels


def _icc_transform(icc: bytes, to_rgb: bool):
    """A CMYK <-> sRGB transform through the file's own profile (None where it cannot be read)."""
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.createProfile("sRGB")
        pair = (profile, srgb, "CMYK", "RGB") if to_rgb else (srgb, profile, "RGB", "CMYK")
        return ImageCms.buildTransform(*pair)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None


def _pil_pixels(img, icc: bytes | None) -> np.ndarray:
    """The pixels in a layout the Restorer takes (see the module docstring for each mode)."""
    if img.mode in ("I;16L", "I;16B"):  # 16-bit grayscale in an explicit byte order
        return np.array(img).astype(np.uint16)
    if img.mode in ("I", "F"):
        raise HinetDeployError(f"{'32-bit integer' if img.mode == 'I' else 'floating-point'} "
                               f"images are not supported: give 8- or 16-bit images")
    if img.mode == "CMYK":
        transform = _icc_transform(icc, to_rgb=True) if icc else None
        from PIL import ImageCms

        return np.array(ImageCms.applyTransform(img, transform) if transform else img.convert("RGB"))
    if img.mode == "1":
        return np.array(img.convert("L"))
    if img.mode not in ("L", "RGB", "RGBA", "I;16"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    return np.array(img)


def _to_file_mode(img, mode: str, icc: bytes | None):
    """The restored image back in the file's own mode (the reverse of _pil_pixels)."""
    from PIL import Image, ImageCms

    if mode == "CMYK" and img.mode == "RGB":
        transform = _icc_transform(icc, to_rgb=False) if icc else None
        return ImageCms.applyTransform(img, transform) if transform else img.convert("CMYK")
    if mode == "P" and img.mode in ("RGB", "RGBA"):
        method = Image.Quantize.FASTOCTREE if img.mode == "RGBA" else Image.Quantize.MEDIANCUT
        quantised = img.quantize(256, method=method)
        clear = np.asarray(img)[..., 3] < 128 if img.mode == "RGBA" else None
        if clear is not None and clear.any():  # GIF keeps one transparent index: theirs
            indices = np.asarray(quantised)[clear]
            quantised.info["transparency"] = int(np.bincount(indices).argmax())
        return quantised
    if mode == "1" and img.mode == "L":
        return img.point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    if mode == "LA" and img.mode == "RGBA":
        rgba = np.asarray(img)
        grey = np.round(rgba[..., :3].mean(axis=2)).astype(np.uint8)
        return Image.fromarray(np.dstack([grey, rgba[..., 3]]), mode="LA")
    return img


def read_image_file(path, max_pixels: int | None = None) -> ImageFile:
    """Reads an image file upright, at its bit depth, with its profile and EXIF. An image of more
    than `max_pixels` (default: common.untrusted.max_pixels(), sized to the machine) is refused
    from its header, before its pixels are decoded, by whichever reader would decode it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    problem = not_regular(path)
    if problem is not None and problem != "does not exist":
        raise HinetDeployError(f"image {path} {problem}")
    try:
        with _pillow_as_we_read(), warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            image = _read_pillow(path, max_pixels)
    except FileNotFoundError as exc:
        raise HinetDeployError(f"image {path} does not exist") from exc
    except HinetDeployError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:  # truncated, corrupt
        what = "damaged (cut short)" if "truncated" in str(exc) else "unreadable"
        raise HinetDeployError(f"cannot read image {path}: {what}: {first_line(exc)}") from exc
    except Exception as exc:  # the readers' own types: pypng's ChunkError, tifffile's, Pillow's
        raise HinetDeployError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    # Pillow's warnings (Corrupt EXIF data, ...) carry no file name: said with it instead
    image.notes = list(dict.fromkeys(f"{path}: {first_line(w.message)} (Pillow)" for w in said
                                     if not issubclass(w.category, Image.DecompressionBombWarning)))
    return image


_PILLOW_SETTINGS = threading.Lock()


@contextlib.contextmanager
def _pillow_as_we_read():
    """Pillow's process-wide settings as this reader needs them, for the read: its own bomb limit
    off (the project's limit, check_pixels, is checked from the header before decoding, and a
    larger --max-megapixels must admit larger images), and truncated files refused even where
    another package set ImageFile.LOAD_TRUNCATED_IMAGES (Pillow then fills the missing part)."""
    from PIL import Image, ImageFile as PillowImageFile

    with _PILLOW_SETTINGS:
        saved = Image.MAX_IMAGE_PIXELS, PillowImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, PillowImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, PillowImageFile.LOAD_TRUNCATED_IMAGES = saved


def _read_pillow(path: Path, max_pixels: int | None) -> ImageFile:
    from PIL import Image

    img = Image.open(path)
    with img:
        check_pixels(*img.size, f"image {path}", max_pixels)
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            raise HinetDeployError(
                f"{path} holds {frames} frames ({img.format}); restore does not cut it to the "
                f"first: extract the frames as images, or give a video")
        fmt = img.format
        if fmt not in FORMATS.values():
            raise HinetDeployError(f"{path}: {fmt} images are not supported (PNG, JPEG, TIFF, "
                                   f"BMP, WebP, PPM, single-frame GIF)")
        deep = _is_16bit_colour(img)  # before getexif(), which may load the pixels
        exif = img.getexif()
        orientation = int(exif.get(_ORIENTATION, 1) or 1)
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
        icc = img.info.get("icc_profile") or None
        pixels = _read_16bit(path, fmt) if deep else _pil_pixels(img, icc)
        mode = img.mode
    return ImageFile(_upright(pixels, orientation), fmt, icc, exif.tobytes() if len(exif) else None,
                     mode)


def _png16_bytes(pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit PNG through pypng, with iCCP and eXIf chunks added before the image data."""
    import png

    height, width = pixels.shape[:2]
    planes = 1 if pixels.ndim == 2 else pixels.shape[2]
    writer = png.Writer(width, height, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=16)
    raw = io.BytesIO()
    writer.write(raw, pixels.reshape(height, width * planes))
    chunks = list(png.Reader(bytes=raw.getvalue()).chunks())
    extra = []
    if icc:
        extra.append((b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    if exif:
        extra.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    at = next(i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    out = io.BytesIO()
    png.write_chunks(out, chunks[:at] + extra + chunks[at:])
    return out.getvalue()


def write_image_file(path, pixels: np.ndarray, like: ImageFile | None = None,
                     jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> None:
    """Writes atomically in the format of the file's extension, at the pixels' bit depth, with the
    profile and EXIF of `like` (the file the pixels came from) where the format holds them."""
    from PIL import Image

    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise HinetDeployError(f"cannot write {path.name!r}: use one of "
                               f"{', '.join(sorted(FORMATS))}")
    icc, exif = (like.icc, like.exif) if like is not None else (None, None)
    colour16 = pixels.dtype == np.uint16 and pixels.ndim == 3
    if pixels.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        raise HinetDeployError(f"{fmt} holds 8 bits per channel; write 16-bit images as PNG or TIFF")
    encoded = io.BytesIO()
    if colour16 and fmt == "PNG":
        encoded.write(_png16_bytes(pixels, icc, exif))
    elif colour16:
        import tifffile

        tifffile.imwrite(encoded, pixels, photometric="rgb", iccprofile=icc, compression="zlib")
    else:
        options = {}
        if fmt in _METADATA_FORMATS:
            options = {k: v for k, v in (("icc_profile", icc), ("exif", exif)) if v}
        if fmt in ("JPEG", "WEBP"):
            options["quality"] = jpeg_quality
        image = Image.fromarray(pixels)
        if like is not None and like.mode:
            image = _to_file_mode(image, like.mode, icc)
        try:
            image.save(encoded, format=fmt, **options)
        except OSError as exc:  # a mode the format cannot hold (CMYK as PNG, ...)
            raise HinetDeployError(f"cannot write {path.name} as {fmt} in mode {image.mode}: "
                                   f"{exc}") from exc
    with atomic_path(path) as tmp:
        write_whole(tmp, encoded.getvalue())
