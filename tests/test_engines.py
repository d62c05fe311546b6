"""Engines: strongly typed FP32/FP16/INT8 builds with TensorRT-RTX on the CPU, sidecars, caches."""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import GOPRO_LIKE, REPO, SIDD_LIKE, random_net
from hinet_deploy.export.checkpoint import save_basicsr
from hinet_deploy.engines.tensorrt_module import import_tensorrt
from hinet_deploy.engines.build import BuildOptions, Profile
from hinet_deploy.engines.sidecar import SCHEMA, read_sidecar
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.build.flow import CalibOptions, GraphRequest, build
from hinet_deploy.engines.targets import rtx_runs_on

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")
needs_trt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                               reason="full TensorRT is not installed")
SMALL_PROFILE = Profile((1, 32, 32), (1, 64, 64), (2, 128, 128))


def _request(small_ckpt, tmp_path, precision):
    calib = CalibOptions(count=4, crop=64, cache_dir=tmp_path / "calib-cache")
    return GraphRequest(ckpt=small_ckpt, precision=precision, out_dir=tmp_path / "out", calib=calib)


def _build(small_ckpt, tmp_path, precision, backend="tensorrt_rtx"):
    req = _request(small_ckpt, tmp_path, precision)
    return build(req, None, backend, BuildOptions(profile=SMALL_PROFILE))


@needs_rtx
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_rtx_builds_each_precision_with_a_sidecar(small_ckpt, tmp_path, precision, capsys):
    engine, built = _build(small_ckpt, tmp_path, precision)
    assert capsys.readouterr().out == ""  # onnxruntime's calibration chatter stays off stdout
    assert engine.stat().st_size == built.facts["engine_bytes"] > 100_000
    sidecar = read_sidecar(engine)
    assert sidecar.schema == SCHEMA and sidecar.tensorrt == "tensorrt_rtx"
    assert sidecar.precision == precision and sidecar.tensorrt_version.startswith("1.")
    assert sidecar.profile == {"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64], "max": [2, 3, 128, 128]}
    assert sidecar.inputs == ("input",) and sidecar.outputs == ("output",)
    # The name says what went in: graph and precision, profile, TensorRT module and version.
    assert f".{precision}" in engine.name and ".1x32x32_1x64x64_2x128x128." in engine.name
    assert f"tensorrt_rtx-{sidecar.tensorrt_version}" in engine.name
    assert not Path(sidecar.facts["onnx"]).is_absolute()  # relative: the folder can move
    graph = onnx.load(sidecar.path_fact("onnx", engine))  # the exact graph is kept on disk
    ops = {n.op_type for n in graph.graph.node}
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    if precision == "fp16":
        assert "Cast" in ops


@needs_rtx
def test_rebuild_reuses_timing_and_calibration_caches(small_ckpt, tmp_path, monkeypatch):
    _, first = _build(small_ckpt, tmp_path, "int8")
    first = first.facts
    assert not first["calibration_cache_hit"]
    quantize_module = importlib.import_module("onnxruntime.quantization.quantize")

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibration ran although its ranges were cached")

    monkeypatch.setattr(quantize_module, "create_calibrator", no_calibration)
    _, second = _build(small_ckpt, tmp_path, "int8")
    second = second.facts
    assert second["calibration_cache_hit"]
    assert second["calibration_cache"] == first["calibration_cache"]
    # TensorRT-RTX has no timing cache (a deprecated no-op since 1.2): none is claimed.
    assert first["timing_cache"] is None and second["timing_cache"] is None


@needs_trt
@pytest.mark.trt
def test_full_tensorrt_rebuild_loads_the_timing_cache(small_ckpt, tmp_path):
    _, first = _build(small_ckpt, tmp_path, "fp16", backend="tensorrt")
    _, second = _build(small_ckpt, tmp_path, "fp16", backend="tensorrt")
    assert not first.facts["timing_cache_loaded"] and second.facts["timing_cache_loaded"]


def _unparseable_graph(path):
    """Valid ONNX that no TensorRT can parse: an op from a domain it has never heard of."""
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 64, 64])
    y = onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 3, 64, 64])
    node = onnx.helper.make_node("Mystery", ["input"], ["output"], domain="com.example")
    graph = onnx.helper.make_graph([node], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[
        onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.example", 1)]), str(path))


@needs_rtx
@pytest.mark.parametrize("content, message", [
    (b"definitely not protobuf", "is not a readable ONNX graph"),
    (_unparseable_graph, "tensorrt_rtx 1.7"),
])
def test_failed_build_leaves_no_engine(tmp_path, content, message):
    bad = tmp_path / "bad.onnx"
    content(bad) if callable(content) else bad.write_bytes(content)
    result = subprocess.run([sys.executable, str(REPO / "export/build_trt.py"), "--fp32", "--onnx",
                             str(bad), "-o", str(tmp_path / "x.engine")],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # progress lines come before the one error line
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.engine").exists() and not (tmp_path / "x.engine.json").exists()


def test_bad_profile_is_refused():
    with pytest.raises(HinetDeployError, match="multiples of 16"):
        Profile((1, 30, 32)).check(16)
    with pytest.raises(HinetDeployError, match="min <= opt <= max"):
        Profile((1, 64, 64), (1, 32, 32), (1, 128, 128)).check(16)


def test_unknown_backend():
    with pytest.raises(HinetDeployError, match="unknown TensorRT module"):
        import_tensorrt("tensorrt_llm")


def test_precision_is_required():
    result = subprocess.run([sys.executable, str(REPO / "export/build_trt.py")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "choose a precision" in result.stderr


@needs_trt
@pytest.mark.trt
def test_full_tensorrt_builds_strongly_typed(small_ckpt, tmp_path):
    engine, sidecar = _build(small_ckpt, tmp_path, "fp16", backend="tensorrt")
    assert sidecar.tensorrt == "tensorrt" and engine.exists()


@needs_rtx
def test_rtx_engine_needs_a_gpu_to_deserialise_here(small_ckpt, tmp_path):
    """Without a GPU deserialisation returns None; with one RTX runs on it must work,
    and on one it does not run on (an H100, sm_90: measured) it must return None."""
    engine, _ = _build(small_ckpt, tmp_path, "fp32")
    backend = import_tensorrt("tensorrt_rtx")
    trt = backend.module
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    loaded = runtime.deserialize_cuda_engine(engine.read_bytes())
    has_gpu = shutil.which("nvidia-smi") is not None and \
        subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    if has_gpu:
        from cuda.bindings import runtime as rt

        props = rt.cudaGetDeviceProperties(0)[1]
        has_gpu = rtx_runs_on((props.major, props.minor))
    assert (loaded is not None) == has_gpu


def _wheel_folder_listing():
    from hinet_deploy.engines.plugin.rtx_parser import wheel_libraries

    folder = wheel_libraries()
    return None if folder is None else sorted(p.name for p in folder.iterdir())


@needs_rtx
@pytest.mark.parametrize("config, blocks", [(GOPRO_LIKE, 4), (SIDD_LIKE, 10)])
def test_rtx_builds_an_engine_holding_the_fused_hin_plugin(config, blocks, tmp_path, monkeypatch):
    """On this CPU-only machine: TensorRT-RTX parses the fused graph (the link in the project's
    cache cures its parser's abort) and builds an engine with one plugin layer per HIN block."""
    monkeypatch.setenv("HINET_DEPLOY_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "net.pth"
    save_basicsr(random_net(config).state_dict(), ckpt)
    wheel_before = _wheel_folder_listing()
    req = _request(ckpt, tmp_path, "fp16")
    req.hin_plugin = True
    engine, sidecar = build(req, None, "tensorrt_rtx", BuildOptions(profile=SMALL_PROFILE))
    facts = read_sidecar(engine).facts
    assert read_sidecar(engine).hin_plugin is True and sidecar.hin_plugin is True
    assert facts["hin_fused"] == blocks and facts["plugin_layers"] == blocks
    assert facts["onnx"] == facts["hin_graph"]  # built from the fused graph
    fused = onnx.load(engine.parent / facts["onnx"])
    assert [n.op_type for n in fused.graph.node].count("HalfInstanceNormLeakyReLU") == blocks
    assert "hin_plugin_unavailable" not in facts
    # What was done is said, and nothing outside the project's cache folder changed.
    if "child process" in facts["hin_plugin_workaround"]:
        link = next((tmp_path / "cache").glob("tensorrt_rtx-libs-*/libtensorrt_rtx.so"))
        assert link.is_symlink() and link.resolve().name == "libtensorrt_rtx.so.1"
    assert _wheel_folder_listing() == wheel_before


@needs_rtx
def test_hin_plugin_falls_back_and_says_why_where_the_cure_cannot_be_applied(small_ckpt, tmp_path,
                                                                           monkeypatch):
    from hinet_deploy.engines.plugin.rtx_parser import UNVERSIONED, wheel_libraries

    if wheel_libraries() is None or (wheel_libraries() / UNVERSIONED).exists():
        pytest.skip("this TensorRT-RTX needs no link: its parser finds its library")
    monkeypatch.setenv("HINET_DEPLOY_CACHE", "/proc/hinet-deploy-cache")  # cannot be made
    req = _request(small_ckpt, tmp_path, "fp16")
    req.hin_plugin = True
    engine, sidecar = build(req, None, "tensorrt_rtx", BuildOptions(profile=SMALL_PROFILE))
    facts = read_sidecar(engine).facts
    assert engine.exists() and sidecar.hin_plugin is False and facts["hin_fused"] == 10
    assert "no link to it could be made" in facts["hin_plugin_unavailable"]
    assert facts["onnx"] != facts["hin_graph"]  # the engine was built from the unfused graph
    assert facts["plugin_layers"] == 0


@needs_rtx
def test_rtx_builds_without_named_targets_record_its_default_targets(small_ckpt, tmp_path):
    from hinet_deploy.engines.build import runs_on
    from hinet_deploy.engines.targets import RTX_DEFAULT_TARGETS

    engine, sidecar = _build(small_ckpt, tmp_path, "fp32")
    assert read_sidecar(engine).compute_capabilities == RTX_DEFAULT_TARGETS == (
        "SM80", "SM86", "SM89", "SM120")  # TensorRT-RTX's documentation
    assert runs_on(sidecar) == "SM80, SM86, SM89, SM120 and later"


@needs_rtx
def test_rtx_target_compute_capabilities_are_recorded(small_ckpt, tmp_path):
    req = _request(small_ckpt, tmp_path, "fp32")
    options = BuildOptions(profile=SMALL_PROFILE, compute_capabilities=("SM86", "SM89"))
    engine, _ = build(req, None, "tensorrt_rtx", options)
    assert read_sidecar(engine).compute_capabilities == ("SM86", "SM89")
    assert engine.name.endswith("-sm86-sm89.engine")
    req = _request(small_ckpt, tmp_path / "again", "fp16")
    with pytest.raises(HinetDeployError, match="unknown compute capability SM90"):
        build(req, tmp_path / "x.engine", "tensorrt_rtx",
              BuildOptions(profile=SMALL_PROFILE, compute_capabilities=("SM90",)))
    # Refused before any graph was made, not after the FP16 rewrite.
    assert not (tmp_path / "x.engine").exists() and not (tmp_path / "again").exists()


@needs_rtx
def test_a_moved_engine_folder_loads_through_its_sidecar(small_ckpt, tmp_path):
    """Built, then the whole folder copied elsewhere (as to a Jetson) and the original removed:
    the sidecar is found beside the engine, checked, and names the graph in its new place."""
    engine, _ = _build(small_ckpt, tmp_path, "fp32")
    moved = tmp_path / "elsewhere" / "engines"
    shutil.copytree(engine.parent, moved)
    shutil.rmtree(engine.parent)
    sidecar = read_sidecar(moved / engine.name)
    assert sidecar.path_fact("onnx", moved / engine.name).is_file()
    # Loading checks the sidecar against the installed TensorRT-RTX, then needs a GPU (none here:
    # the refusal names that; on a GPU the engine-vs-PyTorch test runs it).
    from hinet_deploy.runtime import Restorer

    if _gpu_count() == 0:
        with pytest.raises(HinetDeployError, match="needs an NVIDIA GPU and driver"):
            Restorer(moved / engine.name)


def _gpu_count() -> int:
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        return 0
    err, count = rt.cudaGetDeviceCount()
    return count if err == rt.cudaError_t.cudaSuccess else 0


def _probe_graph(tmp_path):
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 4, "H", "W"])
    y = onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 4, "H", "W"])
    node = onnx.helper.make_node("HalfInstanceNormLeakyReLU", ["input"], ["output"],
                                 domain="hinet_deploy", epsilon=1e-5, negative_slope=0.2,
                                 gamma=[1.0, 1.0], beta=[0.0, 0.0])
    graph = onnx.helper.make_graph([node], "probe", [x], [y])
    path = tmp_path / "probe.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[
        onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("hinet_deploy", 1)]), str(path))
    return path


def _probe(graph, env=None):
    probe = REPO / "tests" / "data" / "rtx_python_plugin_probe.py"
    return subprocess.run([sys.executable, str(probe), str(graph), "4"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


@needs_rtx
def test_rtx_parses_and_builds_a_python_plugin_with_the_cure(tmp_path, monkeypatch):
    from hinet_deploy.engines.plugin.rtx_parser import parser_fix

    monkeypatch.setenv("HINET_DEPLOY_CACHE", str(tmp_path / "cache"))
    result = _probe(_probe_graph(tmp_path), parser_fix().env)
    assert result.returncode == 0, result.stderr[-500:]


@needs_rtx
def test_rtx_parser_still_aborts_without_the_cure(tmp_path):
    """The cause the cure is for (a tripwire: if this TensorRT-RTX finds its library by itself,
    the link is no longer needed and engines.plugin.rtx_parser can say so)."""
    from hinet_deploy.engines.plugin.rtx_parser import UNVERSIONED, wheel_libraries

    if wheel_libraries() is None or (wheel_libraries() / UNVERSIONED).exists():
        pytest.skip("this TensorRT-RTX ships its unversioned library name")
    path = os.pathsep.join(p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
                           if p and not (Path(p) / UNVERSIONED).exists())
    result = _probe(_probe_graph(tmp_path), {"LD_LIBRARY_PATH": path})
    assert result.returncode == -signal.SIGABRT and "terminate called" in result.stderr, \
        f"rc {result.returncode}: {result.stderr[-300:]}"


@needs_rtx
def test_failed_build_removes_its_graphs_and_keeps_the_calibration_ranges(small_ckpt, tmp_path,
                                                                          monkeypatch, capsys):
    import hinet_deploy.engines.build as engines_build

    def out_of_memory(*args, **kwargs):  # where a real build fails: TensorRT, after the graphs
        raise HinetDeployError("tensorrt_rtx failed to build: OutOfMemory")

    monkeypatch.setattr(engines_build, "build_engine", out_of_memory)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("a file of the user's")
    with pytest.raises(HinetDeployError, match="OutOfMemory"):
        _build(small_ckpt, tmp_path, "int8")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
    assert len(list((tmp_path / "calib-cache").glob("*.json"))) == 1
    err = capsys.readouterr().err
    assert "removed what this build wrote: small.fp32.onnx, small.int8-" in err
    assert "kept the calibration ranges" in err


@needs_rtx
def test_bad_profile_fails_before_any_graph_is_made(small_ckpt, tmp_path):
    req = _request(small_ckpt, tmp_path, "int8")
    with pytest.raises(HinetDeployError, match="multiples of 16"):
        build(req, None, "tensorrt_rtx", BuildOptions(profile=Profile((1, 30, 32))))
    assert not (tmp_path / "out").exists() and not (tmp_path / "calib-cache").exists()
