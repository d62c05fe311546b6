"""Image files keep what makes them the user's: bit depth, orientation, ICC profile, EXIF."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime.image_files import read_image_file, write_image_file

ICC = b"\0\0\0\x18fake-icc-profile-bytes"  # carried as bytes; nothing here interprets it


def _pattern(dtype, channels=3, shape=(20, 30)):
    top = np.iinfo(dtype).max
    values = np.random.default_rng(1).integers(0, top, (*shape, channels), dtype=np.int64)
    return values.astype(dtype)


@pytest.mark.parametrize("name", ["x.png", "x.tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_stays_16bit(tmp_path, name, channels):
    pixels = _pattern(np.uint16, channels)
    path = tmp_path / name
    write_image_file(path, pixels)
    Image.open(path)  # a file other tools open
    got = read_image_file(path)
    assert got.pixels.dtype == np.uint16
    np.testing.assert_array_equal(got.pixels, pixels)


def test_pillow_alone_would_reduce_16bit_rgb_to_8bit(tmp_path):
    """Why the pypng/tifffile path exists (if Pillow learns 16-bit RGB, this fails: simplify)."""
    write_image_file(tmp_path / "x.png", _pattern(np.uint16))
    assert np.array(Image.open(tmp_path / "x.png")).dtype == np.uint8


@pytest.mark.parametrize("name, dtype", [("x.png", np.uint16), ("x.png", np.uint8),
                                         ("x.jpg", np.uint8), ("x.webp", np.uint8),
                                         ("x.tif", np.uint8)])
def test_icc_and_exif_are_carried_over(tmp_path, name, dtype):
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    source = tmp_path / ("src" + name[1:])
    Image.fromarray(_pattern(np.uint8)).save(source, icc_profile=ICC, exif=exif.tobytes())
    like = read_image_file(source)
    assert like.icc == ICC
    write_image_file(tmp_path / name, _pattern(dtype), like)
    back = read_image_file(tmp_path / name)
    assert back.icc == ICC
    loaded = Image.Exif()
    loaded.load(back.exif)
    assert loaded[0x010F] == "CameraMaker"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow_and_reset(tmp_path, orientation):
    pixels = _pattern(np.uint8, shape=(12, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "o.png", exif=exif.tobytes())
    got = read_image_file(tmp_path / "o.png")
    want = np.array(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(got.pixels, want)
    written = Image.Exif()
    written.load(got.exif)
    assert written[0x0112] == 1  # upright pixels must not be turned again by a viewer


@pytest.mark.parametrize("name", ["a.gif", "a.tif"])
def test_multi_frame_files_are_refused_not_cut(tmp_path, name):
    frames = [Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    with pytest.raises(HinetDeployError, match="holds 3 frames"):
        read_image_file(tmp_path / name)


@pytest.mark.parametrize("content, words", [(b"", "cannot read image"),
                                            (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "cannot read image"),
                                            (b"GIF89a not really", "cannot read image")])
def test_unreadable_files(tmp_path, content, words):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(HinetDeployError, match=words):
        read_image_file(tmp_path / "x.png")


def test_truncated_png_is_refused(tmp_path):
    write_image_file(tmp_path / "x.png", _pattern(np.uint8, shape=(64, 64)))
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "x.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(HinetDeployError, match="cannot read image"):
        read_image_file(tmp_path / "x.png")


def test_16bit_to_jpeg_is_refused(tmp_path):
    with pytest.raises(HinetDeployError, match="8 bits per channel"):
        write_image_file(tmp_path / "x.jpg", _pattern(np.uint16))
    assert list(tmp_path.iterdir()) == []


def _round_trip(tmp_path, image: Image.Image, name: str, **save) -> Image.Image:
    """Read as restore reads, written back as restore writes (the pixels unchanged)."""
    source, target = tmp_path / f"in-{name}", tmp_path / f"out-{name}"
    image.save(source, **save)
    got = read_image_file(source)
    write_image_file(target, got.pixels, got)
    return Image.open(target)


def test_a_palette_image_stays_palette_with_its_transparency(tmp_path):
    image = Image.new("P", (16, 12))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 200, 30] + [0] * 253 * 3)
    image.putdata([(x // 6) % 3 for x in range(16 * 12)])
    out = _round_trip(tmp_path, image, "p.png", transparency=0)
    assert out.mode == "P" and "transparency" in out.info
    np.testing.assert_array_equal(np.array(out.convert("RGBA")),
                                  np.array(Image.open(tmp_path / "in-p.png").convert("RGBA")))


def test_one_bit_stays_one_bit(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).random((12, 16)) > 0.5)
    out = _round_trip(tmp_path, image, "b.png")
    assert out.mode == "1"
    np.testing.assert_array_equal(np.array(out), np.array(image))


def test_grey_with_alpha_stays_grey_with_alpha(tmp_path):
    values = np.random.default_rng(0).integers(0, 256, (12, 16, 2), np.uint8)
    out = _round_trip(tmp_path, Image.fromarray(values, mode="LA"), "la.png")
    assert out.mode == "LA"
    np.testing.assert_array_equal(np.array(out), values)


def test_cmyk_stays_cmyk(tmp_path):
    ramp = np.linspace(0, 255, 16)[None, :] * np.ones((12, 1))
    values = np.dstack([ramp, ramp[:, ::-1], np.full_like(ramp, 90), np.zeros_like(ramp)])
    values = values.astype(np.uint8)  # smooth (JPEG's own loss stays small); no black, so
    # Pillow's plain CMYK <-> RGB conversion is exact
    image = Image.fromarray(values, mode="CMYK")
    for name in ("c.jpg", "c.tif"):
        out = _round_trip(tmp_path, image, name, **({"quality": 100} if name.endswith("jpg") else {}))
        assert out.mode == "CMYK"
        seen = np.array(Image.open(tmp_path / f"in-{name}").convert("RGB"), np.int16)
        assert np.abs(np.array(out.convert("RGB"), np.int16) - seen).max() <= 3


def test_a_single_frame_gif_stays_a_palette_gif_with_its_transparency(tmp_path):
    image = Image.new("P", (16, 12))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 200, 30] + [0] * 253 * 3)
    image.putdata([(x // 5) % 3 for x in range(16 * 12)])
    out = _round_trip(tmp_path, image, "one.gif", transparency=0)
    assert out.format == "GIF" and out.mode == "P" and out.info.get("transparency") is not None
    np.testing.assert_array_equal(np.array(out.convert("RGBA"))[..., 3],
                                  np.array(Image.open(tmp_path / "in-one.gif").convert("RGBA"))[..., 3])


def test_an_animated_gif_is_refused_by_name(tmp_path):
    frames = [Image.new("RGB", (8, 8), (i * 80, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(HinetDeployError, match="holds 3 frames"):
        read_image_file(tmp_path / "anim.gif")
