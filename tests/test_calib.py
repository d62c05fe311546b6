"""Calibration data: same preprocessing as the Restorer, clear errors for bad folders."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hinet_deploy.calib.data import CalibrationReader, folder_images, make_crops, preprocess
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime.images import to_network


def test_preprocessing_equals_the_restorers():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess(image), to_network(image)[0])


def _write(folder, name, size, mode="RGB"):
    Image.new(mode, size, color=100).save(folder / name)


def test_folder_of_mixed_images(tmp_path):
    _write(tmp_path, "a.png", (300, 280))
    _write(tmp_path, "b.jpg", (400, 300), "L")  # grayscale becomes RGB
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    images = folder_images(tmp_path)
    assert sorted(images) == ["a.png", "b.jpg"]
    crops = make_crops(images, crop=256, count=5)
    assert len(crops.crops) == 5 and all(c.shape == (3, 256, 256) for c in crops.crops)
    grid = make_crops(images, crop=128, count=100, mode="grid")
    assert len(grid.crops) == 2 * 2 + 2 * 3  # whole 128-cells of 280x300 and 300x400


def test_images_left_out_are_named(tmp_path):
    Image.new("RGB", (300, 280), color=(200, 200, 200)).save(tmp_path / "big.png")
    _write(tmp_path, "small.png", (100, 80))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    said = []
    crops = make_crops(folder_images(tmp_path, log=said.append), crop=256, count=3, log=said.append)
    assert len(crops.crops) == 3 and all(np.all(c == np.float32(200 / 255)) for c in crops.crops)
    assert said == ["calibration: left out 1 unreadable file(s) (broken.png)",
                    "calibration: left out 1 image(s) smaller than 256x256 (small.png)"]


def test_reader_batches_then_ends():
    images = {"x": np.zeros((64, 64, 3), np.uint8)}
    reader = CalibrationReader(make_crops(images, crop=32, count=5), batch=2, progress=False)
    shapes = []
    while (feed := reader.get_next()) is not None:
        shapes.append(feed["input"].shape)
    assert shapes == [(2, 3, 32, 32), (2, 3, 32, 32), (1, 3, 32, 32)]


def test_fingerprint_follows_the_pixels():
    a = make_crops({"x": np.zeros((64, 64, 3), np.uint8)}, crop=32, count=2)
    b = make_crops({"x": np.ones((64, 64, 3), np.uint8)}, crop=32, count=2)
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "has no readable images"),
    (lambda d: (d / "a.txt").write_text("x"), "has no readable images"),
    (lambda d: _write(d, "tiny.png", (40, 40)), "no calibration image is at least 256x256"),
])
def test_bad_folders(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(HinetDeployError, match=message):
        make_crops(folder_images(tmp_path), crop=256, count=4)


def test_missing_folder(tmp_path):
    with pytest.raises(HinetDeployError, match="does not exist"):
        folder_images(tmp_path / "nope")


def test_reader_strides_cover_every_crop_once():
    """onnxruntime's strided calibration calls set_range then drains the reader, stride by stride."""
    crops = make_crops({"x": np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3) % 251},
                       crop=16, count=5)
    reader = CalibrationReader(crops)
    seen = []
    for start in range(0, len(reader), 2):
        reader.set_range(start_index=start, end_index=start + 2)
        while (feed := reader.get_next()) is not None:
            seen.extend(feed["input"])
    assert len(seen) == 5
    for got, want in zip(seen, crops.crops):
        np.testing.assert_array_equal(got, want)
