"""Restorer: any size and type in, the same out; backends agree; bad input is refused clearly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hinet_deploy.export.checkpoint import load_checkpoint
from hinet_deploy.export.onnx_export import export_onnx
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime import Restorer


@pytest.fixture(scope="module")
def onnx_restorer(small_onnx):
    with Restorer(small_onnx) as r:
        yield r


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(7)
    base = np.linspace(0, 255, 53)[None, :, None] * np.ones((37, 1, 3))
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def test_matches_the_network_directly_on_a_multiple_of_16(onnx_restorer, small_ckpt):
    rng = np.random.default_rng(0)
    image = rng.random((48, 64, 3), dtype=np.float32)
    got = onnx_restorer(image)
    with torch.no_grad():
        net = load_checkpoint(small_ckpt).net
        want = net(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])[1][0]
    want = want.clamp(0, 1).numpy().transpose(1, 2, 0)
    assert got.dtype == np.float32 and got.shape == image.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", ["whole", "grids", "blend"])
def test_odd_size_uint8_round_trip_and_backends_agree(onnx_restorer, small_ckpt, small_onnx, photo,
                                                      mode):
    options = {} if mode == "whole" else {"tile": 32, "overlap": 16}
    with Restorer(small_onnx, mode=mode, **options) as ort_r, \
            Restorer(small_ckpt, mode=mode, **options) as torch_r:
        a, b = ort_r(photo), torch_r(photo)
    assert a.shape == photo.shape and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_grayscale_is_restored_as_replicated_rgb(onnx_restorer, photo):
    gray = photo[..., 0]
    out = onnx_restorer(gray)
    assert out.shape == gray.shape and out.dtype == np.uint8
    rgb = onnx_restorer(np.repeat(gray[..., None], 3, axis=2).astype(np.float32) / 255)
    expected = np.rint(rgb.mean(axis=2) * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert onnx_restorer(gray[..., None]).shape == gray.shape + (1,)


def test_alpha_passes_through(onnx_restorer, photo):
    alpha = np.arange(photo.shape[0] * photo.shape[1], dtype=np.uint8).reshape(photo.shape[:2])
    rgba = np.concatenate([photo, alpha[..., None]], axis=2)
    out = onnx_restorer(rgba)
    np.testing.assert_array_equal(out[..., 3], alpha)
    np.testing.assert_array_equal(out[..., :3], onnx_restorer(photo))


@pytest.mark.parametrize("dtype, scale", [(np.uint16, 65535), (np.float64, 1), (np.float16, 1)])
def test_dtypes_are_kept(onnx_restorer, photo, dtype, scale):
    image = (photo.astype(np.float64) / 255 * scale).astype(dtype)
    out = onnx_restorer(image)
    assert out.dtype == dtype and out.shape == image.shape
    as_u8 = np.rint(out.astype(np.float64) / scale * 255)
    assert np.abs(as_u8 - onnx_restorer(photo)).max() <= 1


@pytest.mark.parametrize("image, message", [
    (np.zeros((3, 32, 32), np.uint8), "channels go last"),
    (np.zeros((32, 32, 5), np.uint8), "not HxW"),
    (np.zeros((32, 32, 3), np.int32), "dtype int32"),
    (np.zeros((32, 32, 3), bool), "dtype bool"),
    (np.zeros((0, 32, 3), np.uint8), "empty"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.full((8, 8, 3), 200.0, np.float32), "divide by 255"),  # 0-255 floats: not clipped to 1
    (np.full((8, 8, 3), -3.0, np.float32), "read as \\[0, 1\\]"),
])
def test_bad_images_are_refused(onnx_restorer, image, message):
    with pytest.raises(HinetDeployError, match=message):
        onnx_restorer(image)


def test_float_overshoot_from_resampling_is_accepted(onnx_restorer):
    image = np.full((16, 16, 3), 1.04, np.float32)  # a bicubic resize of a white [0, 1] image
    assert onnx_restorer(image).max() <= 1.0


@pytest.mark.parametrize("mode", ["whole", "grids"])
def test_pytorch_takes_a_3x3_image_like_onnx_runtime(small_ckpt, small_onnx, mode):
    """3x3 pads to 16x16, a single element at the deepest level: torch's instance norm refuses it,
    the ONNX operator gives 0 before the affine; the model does the same."""
    image = np.random.default_rng(3).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    with Restorer(small_ckpt, mode=mode) as torch_restorer, \
            Restorer(small_onnx, mode=mode) as onnx_one:
        got, want = torch_restorer(image), onnx_one(image)
    assert got.shape == (3, 3, 3)
    assert np.abs(got.astype(int) - want).max() <= 1


def test_fixed_shape_graph_needs_tiles(small_ckpt, tmp_path, photo):
    path = tmp_path / "fixed.onnx"
    export_onnx(load_checkpoint(small_ckpt), path, fixed_shape=(1, 32, 32), log=lambda m: None)
    with pytest.raises(HinetDeployError, match="fixed input of 32x32"):
        Restorer(path, mode="whole")
    with Restorer(path) as r:  # the default, blend, tiles by the graph's size
        assert r(photo).shape == photo.shape
    with Restorer(path, mode="blend", overlap=16, batch=4) as r:
        assert r(photo).shape == photo.shape


@pytest.mark.parametrize("name, message", [("model.txt", "does not exist"),
                                           ("model.bin", "expected .onnx, .pth or .engine")])
def test_unknown_model_files(tmp_path, name, message):
    path = tmp_path / name
    if name.endswith(".bin"):
        path.write_bytes(b"x")
    with pytest.raises(HinetDeployError, match=message):
        Restorer(path)


@pytest.mark.parametrize("model, option", [("ckpt", {"threads": 2}),
                                           ("onnx", {"cuda_graph": True})])
def test_options_a_backend_does_not_take_are_refused(small_ckpt, small_onnx, model, option):
    path = small_ckpt if model == "ckpt" else small_onnx
    with pytest.raises(HinetDeployError, match=f"does not take {next(iter(option))}; it takes"):
        Restorer(path, **option)


def test_a_backend_object_must_state_its_limits():
    class NoLimits:
        def run(self, batch):
            return batch

    with pytest.raises(HinetDeployError, match="NoLimits has no `limits`"):
        Restorer(NoLimits())


def test_corrupt_onnx_is_refused(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(HinetDeployError, match="onnxruntime cannot load"):
        Restorer(path)
