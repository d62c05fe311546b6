"""The card's two commands, verbatim and in order, on a stand-in official checkpoint: the engine
built is of the model exported, never the shipped demo model unless it is asked for by name."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import GOPRO_LIKE, REPO, random_net
from hinet_deploy.common.files import DEFAULT_OUTPUT_DIR, file_sha256
from hinet_deploy.engines.sidecar import read_sidecar
from hinet_deploy.export.metadata import read_graph_metadata
from hinet_deploy.export.checkpoint import save_basicsr


def _run(cwd, script, *args):
    return subprocess.run([sys.executable, str(REPO / "export" / script), *args], cwd=cwd,
                          capture_output=True, text=True)


def _one_error_line(result, text):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and text in last


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="needs tensorrt-rtx (pip install 'hinet-deploy[trt]')")
def test_export_then_build_builds_the_exported_model(tmp_path):
    # gopro's layout (HIN at levels 3-4) at a small width: random weights in BasicSR format.
    save_basicsr(random_net(GOPRO_LIKE).state_dict(), tmp_path / "gopro.pth")
    exported = _run(tmp_path, "to_onnx.py", "--ckpt", "gopro.pth")
    assert exported.returncode == 0, exported.stderr
    built = _run(tmp_path, "build_trt.py", "--fp16")
    assert built.returncode == 0, built.stderr
    first = built.stdout.strip().splitlines()[0]
    assert first.startswith(f"building from {tmp_path / DEFAULT_OUTPUT_DIR / 'gopro.onnx'}")
    (engine,) = (tmp_path / DEFAULT_OUTPUT_DIR / "engines").glob("*.engine")
    assert engine.name.startswith("gopro.fp16.")
    graph = read_sidecar(engine).path_fact("onnx", engine)
    assert read_graph_metadata(graph)["checkpoint_sha256"] == file_sha256(tmp_path / "gopro.pth")
    assert "demo" not in (built.stdout + built.stderr)


def test_build_with_no_model_named_and_nothing_exported_says_what_to_pass(tmp_path):
    _one_error_line(_run(tmp_path, "build_trt.py", "--fp16"), "--onnx GRAPH or --ckpt CHECKPOINT")
    assert not (tmp_path / DEFAULT_OUTPUT_DIR).exists()


def test_export_needs_a_named_checkpoint(tmp_path):
    _one_error_line(_run(tmp_path, "to_onnx.py"), "--ckpt PATH (or --ckpt demo")


@pytest.mark.parametrize("args, text", [
    (["--fp16", "--workspace-mb", "-5"], "--workspace-mb: -5 is not at least 1"),
    (["--int8", "--calib-count", "0"], "--calib-count: 0 is not at least 1"),
    (["--fp16", "--max", "4", "x", "1024"], "--max: 'x' is not a whole number"),
])
def test_nonsense_numbers_are_one_line_before_any_work(tmp_path, args, text):
    result = _run(tmp_path, "build_trt.py", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert text in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / DEFAULT_OUTPUT_DIR).exists()


@pytest.mark.parametrize("script, args", [("to_onnx.py", ["--ckpt", "demo"]),
                                          ("build_trt.py", ["--fp16", "--ckpt", "demo"])])
def test_output_naming_a_directory_is_one_line(tmp_path, script, args):
    (tmp_path / "out").mkdir()
    _one_error_line(_run(tmp_path, script, *args, "-o", "out"), "-o out is a directory")
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / DEFAULT_OUTPUT_DIR).exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="needs tensorrt-rtx (pip install 'hinet-deploy[trt]')")
def test_int8_of_the_gopro_variant_builds_with_default_options(tmp_path):
    """The README's INT8 command on an 88M-parameter model: it once ran out of its 4096 MB
    workspace cap. Random gopro weights stand in for the official file."""
    from hinet_deploy.export.checkpoint import random_model

    save_basicsr(random_model("gopro").net.state_dict(), tmp_path / "gopro.pth")
    assert _run(tmp_path, "to_onnx.py", "--ckpt", "gopro.pth").returncode == 0
    built = _run(tmp_path, "build_trt.py", "--int8")
    assert built.returncode == 0, built.stderr[-2000:]
    assert "Collecting tensor data" not in built.stdout
    (engine,) = (tmp_path / DEFAULT_OUTPUT_DIR / "engines").glob("gopro.int8-*.engine")
    assert read_sidecar(engine).precision == "int8"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="needs tensorrt-rtx (pip install 'hinet-deploy[trt]')")
def test_a_build_after_export_leaves_one_fp32_graph(tmp_path):
    """The card's two steps on one checkpoint: the build reuses the graph export wrote (the same
    checkpoint by its hash) instead of writing a second FP32 copy."""
    save_basicsr(random_net(GOPRO_LIKE).state_dict(), tmp_path / "gopro.pth")
    assert _run(tmp_path, "to_onnx.py", "--ckpt", "gopro.pth").returncode == 0
    built = _run(tmp_path, "build_trt.py", "--int8", "--ckpt", "gopro.pth", "--calib-count", "2",
                 "--calib-crop", "64", "--opt", "1", "128", "128", "--max", "1", "128", "128")
    assert built.returncode == 0, built.stderr[-2000:]
    out = tmp_path / DEFAULT_OUTPUT_DIR
    fp32 = [p for p in out.rglob("*.onnx") if ".int8" not in p.name]
    assert fp32 == [out / "gopro.onnx"]
    assert f"reusing {DEFAULT_OUTPUT_DIR / 'gopro.onnx'}" in built.stderr
