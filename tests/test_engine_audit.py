"""Regression tests for the engine path's audit against NVIDIA's documentation and samples, each
run on a CPU where the finding allows it (the GPU halves are in test_device_io / test_hin_fusion)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import tomllib
import types

import numpy as np
import onnx
import pytest

from conftest import REPO
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.engines.build import BuildOptions, Profile, build_engine, load_timing_cache, \
    timing_cache_bytes
from hinet_deploy.engines.plugin.hin_plugin import (SHARED_PLANE_BYTES, launch_plan, nvrtc_target,
                                                    plugin_classes)
from hinet_deploy.engines.sidecar import EngineSidecar, read_sidecar
from hinet_deploy.engines.tensorrt_module import collecting_logger, import_tensorrt
from hinet_deploy.export.checkpoint import load_checkpoint
from hinet_deploy.export.hin_fusion import fold_hin_blocks
from hinet_deploy.export.hin_spec import PLUGIN_DOMAIN, PLUGIN_VERSION
from hinet_deploy.export.onnx_export import export_onnx
from hinet_deploy.runtime.backends.tensorrt import io_from_names

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="needs tensorrt-rtx (pip install 'hinet-deploy[trt]')")
SMALL = Profile((1, 32, 32), (1, 64, 64), (2, 128, 128))


# 1. Shared memory: the plane cache plus the kernel's static shared memory fits 48 KiB.
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_plane_cache_leaves_room_for_static_shared_memory(arch, tmp_path):
    source = REPO / "engines" / "plugin" / "hin_leaky.cu"
    out = subprocess.run(["nvcc", "--resource-usage", f"-arch={arch}", "-c", str(source), "-o",
                          str(tmp_path / "k.o")], capture_output=True, text=True, check=True)
    usage = out.stdout + out.stderr
    leaky = [int(m.group(1)) for m in re.finditer(
        r"Function properties for hin_leaky_f(?:32|16).*?(\d+) bytes smem", usage, re.S)]
    static = [int(s) for s in re.findall(r"hin_leaky_f(?:32|16)\n.*?(\d+) bytes smem", usage, re.S)]
    measured = max(leaky + static) if leaky + static else max(
        int(s) for s in re.findall(r"(\d+) bytes smem", usage))
    assert measured > 0
    assert SHARED_PLANE_BYTES + measured <= 48 * 1024


@pytest.mark.parametrize("h, w", [(96, 128), (128, 96), (64, 192), (110, 111)])
def test_planes_the_cache_cannot_hold_take_the_split_path(h, w):
    # H*W in 12189..12288: these went to the shared-memory kernel and failed to launch.
    splits, shared = launch_plan((1, 64, h, w))
    assert splits > 0 and shared == 0


def test_small_planes_still_use_the_cache():
    assert launch_plan((1, 64, 64, 64)) == (0, 64 * 64 * 4)


# 2. The fused node names its plugin the way TensorRT before 10.10 looks it up.
def test_fused_node_carries_plugin_namespace_and_version(small_onnx):
    fused, report = fold_hin_blocks(onnx.load(str(small_onnx)))
    nodes = [n for n in fused.graph.node if n.domain == PLUGIN_DOMAIN]
    assert len(nodes) == report.fused > 0
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_namespace"] == PLUGIN_DOMAIN.encode()
        assert attrs["plugin_version"] == PLUGIN_VERSION.encode()


@needs_rtx
def test_creator_ignores_the_lookup_fields():
    trt = import_tensorrt("tensorrt_rtx").module
    _, creator_class = plugin_classes(trt)
    fields = trt.PluginFieldCollection([
        trt.PluginField("epsilon", np.array([1e-5], np.float32), trt.PluginFieldType.FLOAT32),
        trt.PluginField("negative_slope", np.array([0.2], np.float32), trt.PluginFieldType.FLOAT32),
        trt.PluginField("gamma", np.ones(2, np.float32), trt.PluginFieldType.FLOAT32),
        trt.PluginField("beta", np.zeros(2, np.float32), trt.PluginFieldType.FLOAT32),
        trt.PluginField("plugin_namespace", np.frombuffer(b"hinet_deploy", np.int8),
                        trt.PluginFieldType.CHAR)])
    plugin = creator_class().create_plugin("hin", fields, trt.TensorRTPhase.BUILD)
    assert sorted(plugin.fields) == ["beta", "epsilon", "gamma", "negative_slope"]
    assert plugin.timing_cache_id == ""  # one timing for every HIN layer


# 3./4. cuda-bindings' major version matches the CUDA of the TensorRT it serves; NVRTC declared.
def _extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("extra, cuda", [("trt", 13), ("tensorrt-cu12", 12), ("jetson", 12)])
def test_cuda_bindings_major_matches_each_extra(extra, cuda):
    bindings = [d for d in _extras()[extra] if d.startswith("cuda-bindings")]
    assert bindings == [f"cuda-bindings>={cuda}{'.6' if cuda == 12 else ''},<{cuda + 1}"]


def test_rtx_extra_matches_the_installed_rtx_libraries():
    libs = [d.metadata["Name"] for d in importlib.metadata.distributions()
            if re.fullmatch(r"tensorrt[_-]rtx[_-]cu(\d+)[_-]libs", d.metadata["Name"] or "")]
    if not libs:
        pytest.skip("tensorrt-rtx is not installed")
    (cuda,) = {int(re.search(r"cu(\d+)", n).group(1)) for n in libs}
    assert any(d.startswith(f"cuda-bindings>={cuda}") for d in _extras()["trt"])
    assert any(d.startswith("nvidia-cuda-nvrtc") for d in _extras()["trt"])  # NVRTC declared


def test_nvrtc_target_prefers_a_cubin():
    assert nvrtc_target((8, 6), [75, 80, 86, 89, 90]) == ("--gpu-architecture=sm_86", True)
    assert nvrtc_target((12, 1), [75, 80, 86, 89, 90, 120]) == \
        ("--gpu-architecture=compute_120", False)
    with pytest.raises(HinetDeployError, match="supports sm_75 and newer"):
        nvrtc_target((7, 0), [75, 80])


def test_registering_the_plugin_without_nvrtc_is_one_clear_error(monkeypatch):
    """cuda-bindings without libnvrtc: the failure comes at registration, saying what to install."""
    from cuda.bindings import nvrtc

    from hinet_deploy.engines.plugin import hin_plugin

    def missing():
        raise RuntimeError("Failed to dlopen libnvrtc.so.13")

    monkeypatch.setattr(nvrtc, "nvrtcVersion", missing)
    monkeypatch.setattr(hin_plugin, "_registered", {})
    with pytest.raises(HinetDeployError, match=r"NVRTC.*install it with: pip install .*\[trt\]"):
        hin_plugin.register(types.SimpleNamespace(__name__="tensorrt"))


@pytest.mark.parametrize("capability", [(8, 6), (8, 9), (12, 0)])
def test_nvrtc_compiles_a_cubin_for_rtx_gpus_without_a_gpu(capability):
    """NVRTC needs no GPU: the kernel source compiles here to a loadable ELF cubin."""
    from hinet_deploy.engines.plugin.hin_plugin import check_nvrtc, compile_kernels

    try:
        check_nvrtc()
    except HinetDeployError as exc:
        pytest.skip(str(exc))
    image = compile_kernels(capability)
    assert image[:4] == b"\x7fELF" and b"hin_leaky_f16" in image


# 5. Timing caches: a refused cache falls back to a fresh one; a missing one is not serialised.
class _FakeCache:
    def serialize(self):
        return b"cache"


class _FakeConfig:
    def __init__(self, accept: bool, holds: bool = True):
        self.accept, self.holds, self.set = accept, holds, []

    def create_timing_cache(self, data):
        return (bytes(data),)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.set.append(cache)
        return self.accept or cache == (b"",)

    def get_timing_cache(self):
        return _FakeCache() if self.holds else None


def test_a_cache_from_another_gpu_falls_back_to_a_fresh_one(tmp_path):
    path = tmp_path / "t.cache"
    path.write_bytes(b"timings of another GPU")
    config = _FakeConfig(accept=False)
    assert load_timing_cache(config, path) == (
        False, "t.cache was made by another GPU or TensorRT version")
    assert config.set[-1] == (b"",)  # a fresh cache is what the build uses


def test_an_accepted_cache_is_loaded(tmp_path):
    path = tmp_path / "t.cache"
    path.write_bytes(b"timings")
    assert load_timing_cache(_FakeConfig(accept=True), path) == (True, None)
    assert load_timing_cache(_FakeConfig(accept=True), tmp_path / "none") == (False, None)


def test_no_cache_to_save_is_not_an_error():
    assert timing_cache_bytes(_FakeConfig(accept=True, holds=False)) is None
    assert timing_cache_bytes(_FakeConfig(accept=True)) == b"cache"


# 8. I/O tensors come from the engine and its sidecar, not from hard-coded names.
@needs_rtx
def test_sidecar_records_the_graphs_io_and_the_runtime_checks_it(small_ckpt, tmp_path):
    graph = tmp_path / "both.onnx"
    export_onnx(load_checkpoint(small_ckpt), graph, both_stages=True, log=lambda m: None)
    trt_module = import_tensorrt("tensorrt_rtx")
    engine = tmp_path / "both.engine"
    sidecar = EngineSidecar("tensorrt_rtx", trt_module.version, "fp32", SMALL.as_dict())
    build_engine(trt_module, graph, engine, BuildOptions(profile=SMALL), sidecar)
    written = read_sidecar(engine)
    assert written.inputs == ("input",)
    assert set(written.outputs) == {"output", "output_stage1"}
    io = io_from_names(list(written.inputs), written.outputs, written.outputs, {})
    assert io.result == "output" and set(io.names) == {"input", "output", "output_stage1"}
    with pytest.raises(HinetDeployError, match="lack"):
        io_from_names(["input"], ("output",), written.outputs, {})
    with pytest.raises(HinetDeployError, match="exactly one"):
        io_from_names(["a", "b"], ("output",), ("output",), {})


# 10. One logger per process: a build after a Runtime exists still reports what TensorRT said.
@needs_rtx
def test_build_messages_survive_an_open_runtime(tmp_path):
    trt_module = import_tensorrt("tensorrt_rtx")
    trt = trt_module.module
    runtime = trt.Runtime(collecting_logger(trt))  # as a loaded engine would hold one
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 64, 64])
    y = onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 3, 64, 64])
    node = onnx.helper.make_node("Mystery", ["input"], ["output"], domain="com.example")
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x], [y]), opset_imports=[
        onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.example", 1)]), str(path))
    sidecar = EngineSidecar("tensorrt_rtx", trt_module.version, "fp32", SMALL.as_dict())
    with pytest.raises(HinetDeployError, match="could not parse .*Mystery"):
        build_engine(trt_module, path, tmp_path / "x.engine", BuildOptions(profile=SMALL), sidecar)
    assert collecting_logger(trt) is collecting_logger(trt) and runtime is not None
    with collecting_logger(trt).capture() as messages:
        collecting_logger(trt).log(trt.ILogger.Severity.ERROR, "said")
    assert messages == ["[ERROR] said"]
