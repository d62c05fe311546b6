"""The OpenVINO backend, run for real on this CPU: the same .onnx as ONNX Runtime, FP32 faithful,
BF16 only where the CPU has it and only when asked for."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.backends import open_backend
from hinet_deploy.runtime.metrics import psnr

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (the openvino extra)")


def _has_bf16() -> bool:
    from hinet_deploy.runtime.backends.openvino import native_precisions

    return "bf16" in native_precisions(ov.Core())


needs_bf16 = pytest.mark.skipif(not _has_bf16(), reason="this CPU has no native BF16")


def test_fp32_equals_onnxruntime(small_onnx):
    x = np.random.default_rng(0).random((2, 3, 48, 80), dtype=np.float32)
    expected = open_backend(small_onnx).run(x)
    got = open_backend(small_onnx, "openvino").run(x)
    assert np.abs(got - expected).max() < 1e-4


@needs_bf16
def test_bf16_is_asked_for_and_close_to_fp32(demo_onnx):
    x = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    fp32 = open_backend(demo_onnx, "openvino").run(x)
    bf16 = open_backend(demo_onnx, "openvino", precision="bf16").run(x)
    assert open_backend(demo_onnx, "openvino").precision == "fp32"  # never chosen silently
    assert not np.array_equal(fp32, bf16)  # it really computes in BF16
    assert psnr(np.clip(bf16, 0, 1), np.clip(fp32, 0, 1)) >= 50


def test_bf16_on_a_cpu_without_it_is_refused_in_one_line(small_onnx, monkeypatch):
    from hinet_deploy.runtime.backends import openvino as backend

    monkeypatch.setattr(backend, "native_precisions", lambda core, device="CPU": {"fp32", "int8"})
    with pytest.raises(HinetDeployError, match="this CPU has no native BF16"):
        Restorer(small_onnx, backend="openvino", precision="bf16")
    with pytest.raises(HinetDeployError, match="choose fp32, bf16"):
        Restorer(small_onnx, backend="openvino", precision="fp16")


@pytest.mark.parametrize("mode", ["whole", "grids", "blend"])
def test_the_restorer_in_every_mode_matches_onnxruntime(small_onnx, mode):
    image = np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    with Restorer(small_onnx, mode=mode, tile=64) as ort, \
            Restorer(small_onnx, backend="openvino", mode=mode, tile=64) as vino:
        a, b = ort(image), vino(image)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_restore_with_openvino(tmp_path, small_onnx, capsys):
    from hinet_deploy.cli import main

    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 56, 3), np.uint8)).save(
        tmp_path / "a.png")
    precision = ["--precision", "bf16"] if _has_bf16() else []
    for backend in ("onnxruntime", "openvino"):
        extra = precision if backend == "openvino" else []
        assert main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / backend), "--model",
                     str(small_onnx), "--backend", backend, "--quiet", *extra]) == 0
    a = np.array(Image.open(tmp_path / "onnxruntime" / "a.png"))
    b = np.array(Image.open(tmp_path / "openvino" / "a.png"))
    assert psnr(a, b) > 40
    assert main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "x"), "--model",
                 str(small_onnx), "--precision", "bf16"]) == 2
    assert "onnxruntime (.onnx files) does not take precision" in capsys.readouterr().err
