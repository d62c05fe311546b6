"""Shared small fixtures: tiny random HINets (wf=8) saved the way users have them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hinet_deploy.export.checkpoint import save_basicsr
from hinet_deploy.export.model import HINet, HINetConfig

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent
# Small widths keep the default suite fast; the two HIN layouts of the official variants.
GOPRO_LIKE = HINetConfig(wf=8, hin_position_left=3)
SIDD_LIKE = HINetConfig(wf=8)


@pytest.fixture(autouse=True, scope="session")
def project_cache(tmp_path_factory) -> Path:
    """The project's cache folder (links, runtime caches) of this run, not the user's."""
    folder = tmp_path_factory.mktemp("hinet-deploy-cache")
    os.environ["HINET_DEPLOY_CACHE"] = str(folder)
    return folder


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests of the 88M-parameter variants")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="big variant: opt in with --run-slow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def random_net(config: HINetConfig, seed: int = 0) -> HINet:
    """Random weights everywhere, instance-norm affine included (fresh ones are all 1 / 0)."""
    torch.manual_seed(seed)
    net = HINet(config).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".norm." in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return net


@pytest.fixture(scope="session")
def reference_variants() -> dict:
    return json.loads((DATA / "hinet_variants.json").read_text())


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory) -> Path:
    """A random SIDD-layout wf=8 HINet saved in BasicSR format ({'params': ...})."""
    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    save_basicsr(random_net(SIDD_LIKE).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def small_onnx(small_ckpt, tmp_path_factory) -> Path:
    from hinet_deploy.export.checkpoint import load_checkpoint
    from hinet_deploy.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_onnx(load_checkpoint(small_ckpt), path, log=lambda m: None)
    return path


@pytest.fixture(scope="session")
def demo_onnx(tmp_path_factory) -> Path:
    """The shipped demo model's verified graph (a trained network: precision effects are real)."""
    from hinet_deploy.export.checkpoint import load_checkpoint
    from hinet_deploy.export.onnx_export import export_onnx
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    path = tmp_path_factory.mktemp("demo-onnx") / "demo.onnx"
    export_onnx(load_checkpoint(DEMO_CHECKPOINT), path, log=lambda m: None)
    return path


def edited_engine_copy(engine: Path, tmp_path: Path, edit) -> Path:
    """The engine's folder copied into tmp_path/copy, its sidecar changed by edit(sidecar dict,
    folder): an engine folder as someone else might hand it over."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(engine.parent, folder)
    copy = folder / engine.name
    sidecar = json.loads(copy.with_name(copy.name + ".json").read_text())
    edit(sidecar, folder)
    copy.with_name(copy.name + ".json").write_text(json.dumps(sidecar))
    return copy


def small_rtx_engine(ckpt: Path, out: Path, hin_plugin: bool = False) -> Path:
    """A TensorRT-RTX FP32 engine of a small checkpoint over 1x32x32 .. 2x128x128, built on this
    machine (no GPU needed); skipped where tensorrt_rtx is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt_rtx is not installed")
    from hinet_deploy.build.flow import CalibOptions, GraphRequest, build
    from hinet_deploy.engines.build import BuildOptions, Profile

    req = GraphRequest(ckpt=ckpt, precision="fp32", out_dir=out, hin_plugin=hin_plugin,
                       calib=CalibOptions(cache_dir=out / "cc"))
    engine, sidecar = build(req, None, "tensorrt_rtx",
                            BuildOptions(profile=Profile((1, 32, 32), (1, 64, 64), (2, 128, 128))))
    assert sidecar.hin_plugin == hin_plugin
    return engine
