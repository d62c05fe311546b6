"""Each precision's numerical cost on the demo denoiser, through ONNX Runtime on the CPU."""
from __future__ import annotations

import pytest

from hinet_deploy.checks.fidelity import fidelity
from hinet_deploy.build.flow import CalibOptions, GraphRequest

# Thresholds from the measured table in the README (demo model, held-out photographs):
FP16_MIN_PSNR_VS_FP32 = 55.0  # measured 65.0 dB at worst: far above 40 dB
INT8_MAX_GAIN_LOSS_DB = 0.5  # INT8 must keep the denoising gain within 0.5 dB of FP32
INT8_MIN_PSNR_VS_FP32 = 38.0  # measured 43.0 dB at worst (percentile), 40.9 (entropy/min-max)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity")
    calib = CalibOptions(count=16, cache_dir=out / "calib-cache")
    return {r.name: r for r in fidelity(GraphRequest(out_dir=out, calib=calib))}


def test_fp32_graph_equals_pytorch(rows):
    assert rows["onnxruntime:fp32"].worst_psnr_vs_torch > 60  # 8-bit outputs differ by at most a rare 1 level


def test_fp16_is_far_above_40_db(rows):
    assert rows["onnxruntime:fp16"].worst_psnr_vs_torch > FP16_MIN_PSNR_VS_FP32
    assert abs(rows["onnxruntime:fp16"].gain - rows["onnxruntime:fp32"].gain) < 0.05


def test_int8_keeps_the_denoising_gain(rows):
    assert rows["onnxruntime:fp32"].gain - rows["onnxruntime:int8"].gain < INT8_MAX_GAIN_LOSS_DB
    assert rows["onnxruntime:int8"].worst_psnr_vs_torch > INT8_MIN_PSNR_VS_FP32


OPENVINO_BF16_MIN_PSNR_VS_FP32 = 50.0  # BF16 must stay this close to FP32 to be a default for users


def test_openvino_rows_are_there_and_bf16_stays_close(rows):
    from hinet_deploy.build.flow import backend_models_here
    from hinet_deploy.checks.contenders import precisions_here

    # the FP32 graph at OpenVINO's precisions, then the model `build --int8 --openvino` writes
    wanted = [f"openvino:{p}" for p in precisions_here("openvino")] + backend_models_here()
    assert [name for name in rows if name.startswith("openvino")] == wanted
    if "openvino:fp32" in rows:
        assert rows["openvino:fp32"].worst_psnr_vs_torch > 60
    if "openvino:bf16" in rows:
        assert rows["openvino:bf16"].worst_psnr_vs_torch >= OPENVINO_BF16_MIN_PSNR_VS_FP32
        assert abs(rows["openvino:bf16"].gain - rows["onnxruntime:fp32"].gain) < 0.1
    if "openvino:int8" in rows:  # NNCF's INT8 with the default float layers
        assert rows["onnxruntime:fp32"].gain - rows["openvino:int8"].gain < INT8_MAX_GAIN_LOSS_DB
        assert rows["openvino:int8"].worst_psnr_vs_torch > INT8_MIN_PSNR_VS_FP32
