"""MPRNet, the reference of the paper's claims: official keys, shapes and parameter counts; one block
re-stated independently; ONNX export verified; `claims` measured and shaped as documented."""
from __future__ import annotations

import json
import platform
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import DATA
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.export.mprnet import CAB, SAM, MPRNetConfig, export_mprnet_onnx, mprnet

REFERENCE = json.loads((DATA / "mprnet_variants.json").read_text())["configs"]


@pytest.mark.parametrize("task", ["deblur", "denoise", "derain"])
def test_official_keys_shapes_and_parameter_counts(task):
    net = mprnet(task)
    want = REFERENCE[task]
    config = net.config
    assert {k: getattr(config, k) for k in want["config"]} == want["config"]
    got = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert got == want["state_dict"]  # names, order-independent, and every shape
    assert sum(p.numel() for p in net.parameters()) == want["n_params"]


@pytest.mark.parametrize("task", ["deblur", "derain"])
def test_an_official_state_dict_loads_strictly(task):
    """Tensors of the official shapes under the official names (what a released checkpoint holds)."""
    torch.manual_seed(1)
    state = {k: torch.randn(shape) for k, shape in REFERENCE[task]["state_dict"].items()}
    net = mprnet(task)
    net.load_state_dict(state, strict=True)
    np.testing.assert_array_equal(net.state_dict()["tail.weight"].numpy(), state["tail.weight"])


def _cab_by_hand(x, w):
    """A channel-attention block from the paper's words: conv3x3, PReLU, conv3x3; squeeze (global
    mean), 1x1 conv down by the reduction, ReLU, 1x1 conv up, sigmoid; scale; add the input."""
    y = F.conv2d(x, w["body.0.weight"], padding=1)
    y = torch.where(y >= 0, y, w["body.1.weight"] * y)
    y = F.conv2d(y, w["body.2.weight"], padding=1)
    s = y.mean(dim=(2, 3), keepdim=True)
    s = torch.sigmoid(F.conv2d(torch.relu(F.conv2d(s, w["CA.conv_du.0.weight"])),
                               w["CA.conv_du.2.weight"]))
    return y * s + x


def test_channel_attention_block_restated():
    torch.manual_seed(2)
    block = CAB(16, MPRNetConfig(16, 8, 8), torch.nn.PReLU()).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        x = torch.randn(2, 16, 12, 10)
        want = _cab_by_hand(x, dict(block.state_dict()))
        torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)


def test_residuals_are_added_in_place_as_the_official_code_does():
    """A fresh tensor per residual made the deblurring baseline 20 % slower than the official code
    (export/mprnet.py, "In-place residuals"): CAB and ORB return the storage their body made."""
    from hinet_deploy.export.mprnet import ORB

    config = MPRNetConfig(16, 8, 8, num_cab=1)
    for block, inner in ((CAB(16, config, torch.nn.PReLU()), "CA"),
                         (ORB(16, config, torch.nn.PReLU()), "body")):
        made = []
        getattr(block, inner).register_forward_hook(lambda m, a, out: made.append(out.data_ptr()))
        with torch.inference_mode():
            out = block.eval()(torch.randn(1, 16, 8, 8))
        assert out.data_ptr() == made[0], type(block).__name__


def test_supervised_attention_restated():
    """SAM: image = conv2(F) + input; F' = conv1(F) * sigmoid(conv3(image)) + F."""
    torch.manual_seed(3)
    sam = SAM(8, bias=False).eval()
    feats, image = torch.randn(1, 8, 6, 6), torch.randn(1, 3, 6, 6)
    w = sam.state_dict()
    with torch.no_grad():
        got_feats, got_image = sam(feats, image)
        image_want = F.conv2d(feats, w["conv2.weight"]) + image
        feats_want = F.conv2d(feats, w["conv1.weight"]) * torch.sigmoid(
            F.conv2d(image_want, w["conv3.weight"])) + feats
    torch.testing.assert_close(got_image, image_want)
    torch.testing.assert_close(got_feats, feats_want)


def test_forward_gives_three_images_final_first_and_checks_the_size():
    net = mprnet("derain").eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        outputs = net(x)
        assert [o.shape for o in outputs] == [x.shape] * 3
        # The final image is the residual over the input: tail(features) + input.
        assert not torch.equal(outputs[0], outputs[1])
        with pytest.raises(HinetDeployError, match="multiples of 8"):
            net(torch.rand(1, 3, 30, 48))


def test_onnx_export_is_verified_against_pytorch(tmp_path):
    torch.manual_seed(0)
    diff = export_mprnet_onnx(mprnet("derain"), tmp_path / "m.onnx", 32, 32)
    assert diff < 1e-4 and (tmp_path / "m.onnx").is_file()


def test_claims_report(tmp_path):
    """The JSON's documented fields on a small input; the MACs share at 256x256 is checked by
    counting (sizes scale MACs alike: the share does not depend on the size)."""
    from hinet_deploy.checks.claims import CLAIMS, measure_claims, write_outputs

    report = measure_claims(["sidd-0.5x"], ("pytorch", "onnxruntime"), (32, 32), repeats=1,
                            threads=1, log=lambda m: None)
    (task,) = report["tasks"]
    assert task["task"] == "sidd-0.5x" and task["paper_speedup"] == 6.8
    assert set(task["speedup"]) == {"pytorch:fp32", "onnxruntime:fp32"}  # one naming
    for backend, ratio in task["speedup"].items():
        lat = task["latency"][backend]
        assert ratio == pytest.approx(lat["mprnet"]["median_ms"] / lat["hinet"]["median_ms"])
    assert task["paper_macs_share"] == pytest.approx(100 * 42.88 / 573.50)
    assert abs(task["macs_share"] - CLAIMS["sidd-0.5x"].paper_macs_share) < 1.0
    hinet_params = json.loads((DATA / "hinet_variants.json").read_text())["sidd-0.5x"]["n_params"]
    assert task["params"] == {"hinet": hinet_params, "mprnet": REFERENCE["denoise"]["n_params"]}
    md, png = write_outputs(report, tmp_path / "claims.json")
    assert "sidd-0.5x" in md.read_text() and png.stat().st_size > 10_000
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert report["allocator"].startswith("glibc with freed memory kept")
        assert "allocator: glibc with freed memory kept" in md.read_text()
    assert json.loads((tmp_path / "claims.json").read_text())["tasks"][0]["task"] == "sidd-0.5x"


@pytest.mark.slow
def test_macs_shares_at_256_match_the_paper_within_one_point():
    from hinet_deploy.checks.claims import CLAIMS, measure_claims

    report = measure_claims(tuple(CLAIMS), (), (256, 256), repeats=1, log=lambda m: None)
    for task in report["tasks"]:
        assert abs(task["macs_share"] - task["paper_macs_share"]) < 1.0, task["task"]


def test_fp16_int8_graphs_and_an_engine_like_hinets(tmp_path):
    """The stages HINet goes through apply to MPRNet: FP16 and INT8 graphs from the same rewrites,
    run in ONNX Runtime, and a TensorRT-RTX engine built on this CPU."""
    import importlib.util

    import onnxruntime as ort

    from hinet_deploy.build.calibration import CalibOptions, calibration_images
    from hinet_deploy.calib.data import CalibrationReader, make_crops
    from hinet_deploy.export.mprnet import FLOAT_LAYERS
    from hinet_deploy.export.precision import to_fp16, to_int8

    torch.manual_seed(0)
    fp32 = tmp_path / "m.onnx"
    export_mprnet_onnx(mprnet("derain"), fp32, 32, 32)
    fp16 = to_fp16(fp32, tmp_path / "m.fp16.onnx")
    crops = make_crops(calibration_images(CalibOptions()).images, crop=32, count=4, log=lambda m: None)
    facts = to_int8(fp32, tmp_path / "m.int8.onnx", CalibrationReader(crops, progress=False),
                    float_layers=FLOAT_LAYERS)
    assert len(facts["float_nodes"]) >= 6  # the image-facing convs found by name
    x = crops.crops[0][None]
    outputs = {}
    for name in ("m.onnx", "m.fp16.onnx", "m.int8.onnx"):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        outputs[name] = session.run(None, {"input": x})[0]
    assert np.abs(outputs["m.fp16.onnx"] - outputs["m.onnx"]).max() < 2e-2
    assert outputs["m.int8.onnx"].shape == x.shape and np.isfinite(outputs["m.int8.onnx"]).all()
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt-rtx is not installed: the engine step is not checked")
    from hinet_deploy.engines.build import BuildOptions, Profile, build_engine
    from hinet_deploy.engines.sidecar import EngineSidecar
    from hinet_deploy.engines.tensorrt_module import import_tensorrt

    trt = import_tensorrt("tensorrt_rtx")
    shape = (1, 32, 32)
    sidecar = EngineSidecar(trt.name, trt.version, "fp16",
                            {k: [1, 3, 32, 32] for k in ("min", "opt", "max")}, size_multiple=8)
    built = build_engine(trt, fp16, tmp_path / "m.engine", BuildOptions(Profile(shape, shape, shape)),
                         sidecar)
    assert (tmp_path / "m.engine").stat().st_size == built.facts["engine_bytes"] > 100_000


def test_claims_with_openvino(tmp_path):
    """OpenVINO runs both networks' verified graphs; its rows stand beside ONNX Runtime's."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (the openvino extra)")
    from hinet_deploy.checks.claims import measure_claims
    from hinet_deploy.checks.contenders import precisions_here

    backends = ("onnxruntime:fp32", "openvino:fp32") + (("openvino:bf16",) if "bf16" in
                                                        precisions_here("openvino") else ())
    report = measure_claims(["sidd-0.5x"], backends, (32, 32), repeats=1, threads=1,
                            log=lambda m: None)
    (task,) = report["tasks"]
    assert set(task["speedup"]) == set(backends)
    assert all(ratio > 0 for ratio in task["speedup"].values())
