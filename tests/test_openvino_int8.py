"""INT8 for OpenVINO on the CPU: `build --int8 --openvino` (NNCF), the model it writes opened by the
Restorer in INT8, its recorded PSNR reproduced, held-apart image sets, `sensitivity --openvino`
and its choice in the build; all real (NNCF, OpenVINO, ONNX Runtime), on the CPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install "
                                       "'hinet-deploy[openvino]'")
pytest.importorskip("nncf", reason="NNCF is not installed: pip install 'hinet-deploy[nncf]'")

from PIL import Image  # noqa: E402

from hinet_deploy.build.calibration import MeasureOptions, measurement_images  # noqa: E402
from hinet_deploy.calib.data import make_crops  # noqa: E402
from hinet_deploy.calib.photos import HELD_OUT, TRAIN, load_photo  # noqa: E402
from hinet_deploy.runtime import Restorer  # noqa: E402
from hinet_deploy.runtime.backends import open_backend  # noqa: E402
from hinet_deploy.runtime.metrics import psnr  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CALIB = ["--calib-count", "6", "--calib-crop", "128"]


def _cli(*args, cwd, check=True):
    result = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", *map(str, args)],
                            capture_output=True, text=True, cwd=cwd)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _measured(model: Path, fp32: Path, count: int, crop: int) -> float:
    """Mean PSNR against FP32 (ONNX Runtime, directly) over the held-out crops the build measures
    on, of the model run as the Restorer's backend opens it."""
    import onnxruntime as ort

    crops = make_crops(measurement_images(MeasureOptions()).images, crop, count, "random", 0).crops
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    backend = open_backend(model)
    values = []
    for c in crops:
        reference = np.clip(session.run(None, {"input": c[None]})[0], 0, 1)
        values.append(psnr(np.clip(backend.run(c[None]), 0, 1), reference))
    backend.close()
    return float(np.mean(values))


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    work = tmp_path_factory.mktemp("ov-int8")
    result = _cli("build", "--int8", "--openvino", "--ckpt", "demo", *CALIB, cwd=work)
    last = result.stdout.strip().splitlines()[-1]
    model = work / last.split()[1]
    return work, model, json.loads(Path(f"{model}.json").read_text()), last


def test_the_build_writes_ir_and_a_sidecar_and_names_it_last(demo_build):
    work, model, sidecar, last = demo_build
    assert last.startswith(f"wrote {model.relative_to(work)}") and model.suffix == ".xml"
    assert model.parent == work / "hinet-out" / "openvino" and model.with_suffix(".bin").is_file()
    assert sidecar["backend"] == "openvino" and sidecar["precision"] == "int8"
    assert {"onnx_sha256", "calibration", "float_layers", "openvino", "nncf",
            "psnr_vs_fp32"} <= set(sidecar)
    assert sidecar["calibration"]["crops"] == 6 and sidecar["calibration"]["crop"] == 128
    assert "training photographs" in sidecar["calibration"]["images"]
    assert "held-out photographs" in sidecar["measured_on"]
    assert sidecar["float_layers"] and all(layer.startswith(("conv_0", "last", "sam12"))
                                           for layer in sidecar["float_layers"])


def test_the_restorer_runs_it_in_int8_from_its_sidecar_alone(demo_build):
    _, model, sidecar, _ = demo_build
    with Restorer(model) as restore:
        backend = restore.backend
        assert backend.name == "openvino" and backend.precision == "int8"
        used = backend.runtime_precisions()  # OpenVINO's compiled model, convolution by convolution
        int8 = used.get("u8", 0) + used.get("i8", 0)
        assert int8 > 50 and used.get("f32", 0) >= len(sidecar["float_layers"])
        noisy = load_photo(HELD_OUT[0])[:96, :128]
        assert restore(noisy).shape == noisy.shape
    with pytest.raises(Exception, match="INT8 layers"):  # its precision is its own
        open_backend(model, precision="bf16")


def test_its_files_travel_together_and_run_elsewhere(demo_build, tmp_path):
    """What `restore --ray` ships to a worker: the IR, its weights and its sidecar, which run from
    another folder as they did."""
    import shutil

    from hinet_deploy.runtime.backends import OpenVinoBackend

    _, model, _, _ = demo_build
    files = OpenVinoBackend.model_files(model)
    assert [f.name for f in files] == [model.name, model.with_suffix(".bin").name,
                                       f"{model.name}.json"]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    here, there = open_backend(model), open_backend(tmp_path / model.name)
    assert there.precision == "int8" and np.array_equal(here.run(x), there.run(x))


@pytest.mark.parametrize("part", [".bin", ".xml.json"])
def test_a_fifo_in_place_of_its_weights_or_sidecar_is_refused_not_waited_on(demo_build, tmp_path,
                                                                             part):
    import os
    import shutil

    _, model, _, _ = demo_build
    copy = tmp_path / "m.xml"
    shutil.copy(model, copy)
    for suffix, source in ((".bin", model.with_suffix(".bin")), (".xml.json", Path(f"{model}.json"))):
        target = tmp_path / f"m{suffix}"
        os.mkfifo(target) if suffix == part else shutil.copy(source, target)
    Image.fromarray(load_photo(HELD_OUT[0])[:64, :64]).save(tmp_path / "in.png")
    result = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "restore", "--model",
                             str(copy), str(tmp_path / "in.png"), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and f"m{part} is a FIFO" in result.stderr, result.stderr


def test_without_vnni_it_runs_with_the_same_numbers(demo_build, tmp_path):
    """OpenVINO held to AVX2 (oneDNN's ONEDNN_MAX_CPU_ISA: no VNNI, no AMX), as on older CPUs: the
    model runs on AVX2 kernels, and its output is the one of this CPU's own kernels (the 7-bit
    weights of NNCF's overflow fix: without them the 16-bit sums saturate, 40 dB from FP32)."""
    import os

    _, model, _, _ = demo_build
    crop = make_crops(measurement_images(MeasureOptions()).images, 128, 1, "random", 0).crops[0]
    np.save(tmp_path / "x.npy", crop[None])
    code = ("import sys, json, numpy as np; from hinet_deploy.runtime.backends import open_backend;"
            "b = open_backend(sys.argv[1]); np.save(sys.argv[3], b.run(np.load(sys.argv[2])));"
            "print(json.dumps(b.kernels()))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    result = subprocess.run([sys.executable, "-c", code, str(model), str(tmp_path / "x.npy"),
                             str(tmp_path / "y.npy")], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    kernels = json.loads(result.stdout.strip().splitlines()[-1])
    assert all("avx2" in k and "vnni" not in k and "amx" not in k for k in kernels), kernels
    native = open_backend(model).run(crop[None])
    assert psnr(np.clip(np.load(tmp_path / "y.npy"), 0, 1), np.clip(native, 0, 1)) > 55


def test_its_output_is_the_recorded_psnr_from_fp32(demo_build):
    work, model, sidecar, _ = demo_build
    fp32 = work / sidecar["onnx"]
    measured = _measured(model, fp32, sidecar["measurement"]["crops"],
                         sidecar["measurement"]["crop"])
    assert measured == pytest.approx(sidecar["psnr_vs_fp32"], abs=1e-6)
    assert measured > 40  # INT8 of the demo model: about 44.6 dB (README)


def test_a_calibration_image_among_the_measurement_images_is_refused(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    Image.fromarray(load_photo(TRAIN[0])).save(calib / "mine.png")
    Image.fromarray(load_photo(HELD_OUT[1])).save(calib / "renamed.png")  # a held-out photo
    result = _cli("build", "--int8", "--openvino", "--ckpt", "demo", "--calib-dir", calib,
                  "--calib-count", "2", "--calib-crop", "64", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "renamed.png" in result.stderr and "also calibration images" in result.stderr
    assert not list(tmp_path.glob("hinet-out/openvino/*.xml"))


@pytest.fixture(scope="module")
def shallow_onnx(tmp_path_factory) -> Path:
    """A random HINet of depth 3 (37 convolutions): the measurement compiles one OpenVINO model a
    layer, about 0.6 s each here, so fewer layers keep the test short."""
    from conftest import random_net
    from hinet_deploy.export.checkpoint import LoadedModel
    from hinet_deploy.export.model import HINetConfig
    from hinet_deploy.export.onnx_export import export_onnx

    config = HINetConfig(wf=8, depth=3, hin_position_right=2)
    path = tmp_path_factory.mktemp("shallow") / "shallow.onnx"
    export_onnx(LoadedModel(random_net(config), config, [], None, None), path,
                verify_shapes=[], log=lambda m: None)
    return path


def test_sensitivity_ranks_the_layers_and_the_build_reproduces_its_choice(shallow_onnx, tmp_path):
    measure = ["--count", "2", "--crop", "64"]
    _cli("sensitivity", "--openvino", "--onnx", shallow_onnx, *measure, *CALIB,
         "--float-macs-budget", "4%", "--json", tmp_path / "s.json", cwd=tmp_path)
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["calibration"]["target"] == "openvino"
    gains = [layer["gain"] for layer in report["layers"]]
    assert len(gains) > 15 and gains == sorted(gains, reverse=True)
    # the choice ranks by dB per second in float, measured by OpenVINO's counters, layer by layer
    assert set(report["float_seconds"]) == {layer["layer"] for layer in report["layers"]}
    assert sum(report["float_seconds"].values()) > 0
    choice = report["choice"]
    assert choice["layers"] and choice["float_macs_share"] <= 0.04
    result = _cli("build", "--int8", "--openvino", "--onnx", shallow_onnx, *CALIB,
                  "--float-layers", "auto", "--float-macs-budget", "4%", "--measure-count", "2",
                  "--measure-crop", "64", "-o", tmp_path / "small.xml", cwd=tmp_path)
    sidecar = json.loads((tmp_path / "small.xml.json").read_text())
    assert sidecar["float_choice"]["layers"] == choice["layers"] == sidecar["float_layers"]
    assert sidecar["psnr_vs_fp32"] == pytest.approx(choice["psnr_vs_fp32"], abs=1e-6)
    measured = _measured(tmp_path / "small.xml", shallow_onnx, 2, 64)
    assert measured == pytest.approx(choice["psnr_vs_fp32"], abs=1e-6)
    assert "chosen by measurement" in result.stdout


def test_a_missing_nncf_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['nncf'] = None; from hinet_deploy.cli import main; "
            "sys.exit(main(['build', '--int8', '--openvino', '--ckpt', 'demo']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nncf" in lines[0] and "[nncf]" in lines[0], result.stderr
    assert not (tmp_path / "hinet-out").exists()  # refused before any work


def test_openvino_only_options_are_checked_before_work(tmp_path):
    result = _cli("build", "--fp16", "--openvino", "--ckpt", "demo", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "--openvino builds INT8" in result.stderr
    result = _cli("build", "--int8", "--openvino", "--ckpt", "demo", "--hin-plugin", cwd=tmp_path,
                  check=False)
    assert result.returncode != 0 and "--hin-plugin" in result.stderr
    result = _cli("build", "--int8", "--openvino", "--ckpt", "demo", "-o", "x.onnx", cwd=tmp_path,
                  check=False)
    assert result.returncode != 0 and ".xml" in result.stderr
