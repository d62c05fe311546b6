"""validate and bench: datasets, JSON schema, metrics computed independently, interrupted runs."""
from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from hinet_deploy.export.checkpoint import load_checkpoint
from hinet_deploy.export.shipped import DEMO_CHECKPOINT
from hinet_deploy.checks.datasets import open_dataset
from hinet_deploy.build.flow import CalibOptions, GraphRequest
from hinet_deploy.build.flow import backend_models_here
from hinet_deploy.checks.contenders import precisions_here
from hinet_deploy.checks.validate import Validation
from hinet_deploy.runtime.metrics import psnr


# Every check's rows, in order: the baseline, ONNX Runtime per precision, OpenVINO where installed
# (BF16 where this CPU has it natively).
CONTENDERS = [("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"),
              ("onnxruntime", "int8")] + [("openvino", p) for p in precisions_here("openvino")] + \
    [tuple(name.split(":")) for name in backend_models_here()]


def test_psnr_by_hand():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 16, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 16**2))
    assert psnr(a, a) == math.inf


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    """GoPro-like layout: scene/blur + scene/sharp, files paired by name."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(3)
    for scene in ("s1", "s2"):
        clean = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
        noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
        _save(root / scene / "sharp" / "000.png", clean)
        _save(root / scene / "blur" / "000.png", noisy)
    _save(root / "s1" / "blur" / "unpaired.png", noisy)
    return root


def test_pairs_are_found_by_layout(pair_dir):
    dataset = open_dataset(pair_dir)
    assert sorted(p.name for p in dataset) == ["s1/blur/000.png", "s2/blur/000.png"]
    degraded, clean = dataset.pairs[0].load()
    assert degraded.shape == clean.shape == (48, 40, 3)


def test_unpaired_files_are_named_and_sub_folders_are_read(pair_dir, tmp_path):
    dataset = open_dataset(pair_dir)
    assert dataset.unmatched == ["s1/blur/unpaired.png"]
    said = []
    req = GraphRequest(out_dir=tmp_path / "graphs",
                       calib=CalibOptions(count=2, crop=64, cache_dir=tmp_path / "cc"))
    Validation(DEMO_CHECKPOINT, dataset, req, "blend", engines=([], [])).run(None, said.append)
    assert said[0] == "left out 1 files without their pair: s1/blur/unpaired.png"
    # A folder of clean images is read as restore reads folders: sub-folders too.
    _save(tmp_path / "clean" / "a.png", np.full((32, 32, 3), 128, np.uint8))
    _save(tmp_path / "clean" / "trip" / "b.png", np.full((32, 32, 3), 90, np.uint8))
    assert sorted(p.name for p in open_dataset(tmp_path / "clean")) == ["a.png", "trip/b.png"]


def test_clean_folder_gets_the_stated_noise(tmp_path):
    _save(tmp_path / "a.png", np.full((32, 32, 3), 128, np.uint8))
    dataset = open_dataset(tmp_path, sigma=10)
    assert "sigma 10" in dataset.description
    degraded, clean = dataset.pairs[0].load()
    assert 8 < (degraded.astype(float) - clean).std() < 12


def test_validate_cli_json_and_independent_psnr(pair_dir, tmp_path):
    out = tmp_path / "v"
    result = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "validate", "--data",
                             str(pair_dir), "--out-dir", str(out), "--json", str(tmp_path / "r.json"),
                             "--mode", "whole"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"checkpoint", "dataset", "mode", "device", "results", "unavailable"} <= set(report)
    assert report["mode"] == "whole" and report["unmatched"] == ["s1/blur/unpaired.png"]
    keys = [(r["backend"], r["precision"]) for r in report["results"]]
    assert keys == CONTENDERS
    for r in report["results"]:
        assert {"psnr", "ssim", "psnr_vs_torch", "worst_image", "seconds_per_image"} <= set(r)
        assert len(r["images"]) == 2
    # Recompute the PyTorch row's PSNR for the first pair without the Restorer or the metrics module
    degraded = np.array(Image.open(pair_dir / "s1" / "blur" / "000.png"))
    clean = np.array(Image.open(pair_dir / "s1" / "sharp" / "000.png")).astype(np.float64)
    net = load_checkpoint(DEMO_CHECKPOINT).net
    x = torch.from_numpy(degraded.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    x = torch.nn.functional.pad(x, (0, 8, 0, 0), mode="reflect")  # 40 -> 48 wide
    with torch.no_grad():
        y = net(x)[1][0, :, :, :40].clamp(0, 1).numpy().transpose(1, 2, 0)
    mse = np.mean((np.rint(y * 255) - clean) ** 2)
    expected = 10 * math.log10(255**2 / mse)
    assert report["results"][0]["images"][0]["psnr"] == pytest.approx(expected, abs=0.01)
    for name in ("report.md", "latency_vs_psnr.png", "crops.png"):
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "crops.png").size[0] > 400


def test_interrupted_run_keeps_finished_images(pair_dir, tmp_path):
    dataset = open_dataset(pair_dir)

    def interrupt():
        raise KeyboardInterrupt

    dataset.pairs[1].load = interrupt  # Ctrl-C while the second image loads
    req = GraphRequest(out_dir=tmp_path / "graphs",
                       calib=CalibOptions(count=2, crop=64, cache_dir=tmp_path / "cc"))
    validation = Validation(DEMO_CHECKPOINT, dataset, req, "whole")
    report = validation.run(tmp_path / "r.json", log=lambda m: None)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] and saved["interrupted"]
    assert all(len(r["images"]) == 1 for r in saved["results"])


def test_bench_json(tmp_path):
    from hinet_deploy.checks.bench import bench
    from hinet_deploy.checks.bench import markdown as bench_markdown

    req = GraphRequest(out_dir=tmp_path / "graphs",
                       calib=CalibOptions(count=2, crop=64, cache_dir=tmp_path / "cc"))
    report = bench(DEMO_CHECKPOINT, req, sizes=((40, 64),),
                   repeats=2, threads=1, log=lambda m: None)
    rows = report["rows"]
    assert [(r["backend"], r["precision"]) for r in rows] == CONTENDERS
    baseline_median = statistics.median(rows[0]["times_s"])  # from the raw times, not the report
    for r in rows:
        assert r["padded"] == [48, 64] and len(r["times_s"]) == 2
        assert r["p90_s"] >= r["median_s"] > 0
        assert r["speedup_vs_pytorch_fp32"] == pytest.approx(
            baseline_median / statistics.median(r["times_s"]))
        assert r["macs_paper_per_image"] > r["macs_per_image"] > 0
    assert r["speedup_vs_pytorch_fp32"] != 1.0  # a real ratio, not a row divided by itself
    # OpenVINO names the kernels (instruction sets) it chose, convolution by convolution
    openvino = [f"{b}:{p}" for b, p in CONTENDERS if b == "openvino"]
    assert sorted(report["kernels"]) == sorted(openvino)
    for name, kernels in report["kernels"].items():
        assert sum(kernels.values()) >= 90  # the demo model's 93 convolutions
        assert any("8" in k for k in kernels) == name.endswith("int8")  # I8 kernels for INT8 only
    if openvino:
        assert "convolution kernels (they name the instruction sets used)" in bench_markdown(report)
    if shutil.which("lscpu"):  # the processor the report names is the one lscpu (util-linux) names
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                     if line.startswith("Model name"))
        assert model in report["device"]
    # Engines: run where they can; here, each precision's row says why not (no fixed list).
    from hinet_deploy.engines.targets import engines_unavailable

    reason = engines_unavailable()
    if reason is not None:
        assert [(u["precision"], u["reason"]) for u in report["unavailable"]
                if u["backend"] == "tensorrt"] == [(p, reason) for p in ("fp32", "fp16", "int8")]
        assert f"| all | | tensorrt:fp16 | not run: {reason}" in bench_markdown(report)


def test_bench_reports_memory_and_skips_a_size_that_would_not_fit(tmp_path, monkeypatch):
    import hinet_deploy.checks.bench as bench_module

    req = GraphRequest(out_dir=tmp_path / "graphs",
                       calib=CalibOptions(count=2, crop=64, cache_dir=tmp_path / "cc"))
    # The machine has room for the small size only: 1 GB free; 6400x4800 needs about 40 GB.
    monkeypatch.setattr(bench_module, "available_bytes", lambda: 2**30)
    report = bench_module.bench(DEMO_CHECKPOINT, req, sizes=((4800, 6400), (48, 64)), repeats=1,
                                threads=1, log=lambda m: None)
    assert {(r["height"], r["width"]) for r in report["rows"]} == {(48, 64)}  # smallest first
    for r in report["rows"]:
        assert r["peak_rss_mb"] >= r["run_memory_mb"] >= 0
    assert {(r["backend"], r["precision"]) for r in report["not_run"]} == set(CONTENDERS)
    assert all("would need about" in r["reason"] for r in report["not_run"])
    table = bench_module.markdown(report)
    assert "| 6400x4800 | 1 | pytorch:fp32 | not run: would need about" in table


def test_a_busy_machine_is_said_beside_the_timings():
    """The checks print the load before and after, and warn in one line when it was over half a
    load per core; the readings come from the machine's own load average."""
    import os
    import time

    from hinet_deploy.checks.timing import MachineLoad

    quiet = MachineLoad()
    quiet.before, quiet.after = 0.0, 0.1
    assert "warning" not in quiet.report() and "before 0.00, after 0.10" in quiet.report()
    busy = MachineLoad()
    busy.before, busy.after = 0.0, (os.cpu_count() or 1) * 0.6
    assert busy.report().splitlines()[1].startswith("warning: the machine was busy")
    with MachineLoad() as load:
        time.sleep(0.01)
    assert load.report().startswith("load average (1 min) before ")


def test_validate_rotates_who_goes_first_image_by_image(tmp_path):
    """As every check's rounds alternate: image i starts with contender i mod n, while the results
    keep the contenders' order."""
    from types import SimpleNamespace

    calls = []

    def restorer(key):
        return lambda image: calls.append(key) or image

    validation = Validation.__new__(Validation)
    keys = [("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16")]
    validation.restorers = {key: restorer(key) for key in keys}
    validation.results = {key: SimpleNamespace(images=[]) for key in keys}
    validation.images_done, validation.sample = 0, None
    image = np.zeros((16, 16, 3), np.uint8)
    for i in range(3):
        pair = SimpleNamespace(name=f"im{i}", load=lambda: (image, image))
        validation._one_image(pair)
    assert [calls[i * 3] for i in range(3)] == keys  # each contender went first once
    assert list(validation.sample[3]) == keys
