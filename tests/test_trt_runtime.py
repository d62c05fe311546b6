"""The TensorRT backend of the Restorer: every check that runs before a GPU is touched, and (marked
gpu) the engine against the PyTorch reference."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import edited_engine_copy, small_rtx_engine

from hinet_deploy.engines.sidecar import EngineSidecar
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime import Restorer
from hinet_deploy.engines.targets import gpu_mismatch, rtx_runs_on
from hinet_deploy.runtime.backends.tensorrt import BufferPlan, check_shape, check_sidecar

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt_rtx is not installed")
PROFILE = {"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64], "max": [2, 3, 128, 128]}


def _gpu_count() -> int:
    try:
        from cuda.bindings import runtime as rt

        err, count = rt.cudaGetDeviceCount()
        return count if err == rt.cudaError_t.cudaSuccess else 0
    except ImportError:
        return 0


def test_buffers_grow_only_for_larger_requests():
    plan = BufferPlan()
    grown = []
    for n in (100, 50, 100, 400, 399):
        grown.append(plan.needs("input", n))
        if grown[-1]:
            plan.record("input", n)
    assert grown == [True, False, False, True, False]
    assert plan.capacity == {"input": 400}


def test_a_failed_allocation_leaves_the_plan_usable():
    plan = BufferPlan()
    plan.record("device:input", 100)
    assert plan.needs("device:input", 10**12)  # cudaMalloc fails: nothing recorded
    assert plan.needs("device:input", 10**12) and plan.capacity == {"device:input": 100}
    assert not plan.needs("device:input", 100)


def test_version_mismatch_is_refused(tmp_path):
    sidecar = EngineSidecar("tensorrt_rtx", "1.6.0.1", "fp16", {"max": [1, 3, 64, 64]})
    with pytest.raises(HinetDeployError, match="1.6.0.1 but 1.7.1.116 is installed"):
        check_sidecar(sidecar, "tensorrt_rtx", "1.7.1.116", tmp_path / "e.engine")
    with pytest.raises(HinetDeployError, match="built with tensorrt_rtx, not tensorrt"):
        check_sidecar(sidecar, "tensorrt", "10.3.0", tmp_path / "e.engine")


def test_gpu_engine_mismatches_are_explained():
    assert "outside TensorRT-RTX's list" in gpu_mismatch("tensorrt_rtx", (9, 0), "NVIDIA H100", [])
    assert "outside" in gpu_mismatch("tensorrt_rtx", (7, 5), "T4", [])  # in the enum, not the runtime
    assert rtx_runs_on((12, 0)) and rtx_runs_on((13, 0)) and not rtx_runs_on((9, 0))
    assert "rebuild with --compute-capability SM86" in \
        gpu_mismatch("tensorrt_rtx", (8, 6), "RTX 3090", ["SM89"])
    assert gpu_mismatch("tensorrt_rtx", (8, 9), "RTX 4090", ["SM86", "SM89"]) is None
    assert gpu_mismatch("tensorrt", (9, 0), "NVIDIA H100", []) is None  # built on that GPU


def test_shapes_outside_the_profile_are_refused():
    check_shape((2, 3, 128, 64), PROFILE)
    with pytest.raises(HinetDeployError, match="blend mode with tile <= 128 and batch <= 2"):
        check_shape((1, 3, 256, 256), PROFILE)
    with pytest.raises(HinetDeployError, match="outside the engine's profile"):
        check_shape((3, 3, 64, 64), PROFILE)


def test_engine_without_sidecar(tmp_path):
    engine = tmp_path / "lonely.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(HinetDeployError, match="has no sidecar lonely.engine.json"):
        Restorer(engine)


@pytest.fixture(scope="module")
def rtx_engine(small_ckpt, tmp_path_factory):
    return small_rtx_engine(small_ckpt, tmp_path_factory.mktemp("engine"))


@needs_rtx
@pytest.mark.skipif(_gpu_count() > 0, reason="checks the no-GPU message; this machine has a GPU")
def test_no_gpu_gives_a_clear_error(rtx_engine):
    from hinet_deploy.engines.targets import nvidia_driver_present

    with pytest.raises(HinetDeployError, match="needs an NVIDIA GPU and driver") as refused:
        Restorer(rtx_engine)
    if not nvidia_driver_present():  # the CUDA runtime's words would send people to a driver update
        assert "no NVIDIA GPU here" in str(refused.value)
        assert "insufficient" not in str(refused.value)


@needs_rtx
def test_edited_sidecar_version_is_caught_before_the_gpu(rtx_engine, tmp_path):
    engine = edited_engine_copy(rtx_engine, tmp_path,
                                lambda sidecar, folder: sidecar.update(tensorrt_version="1.0.0.0"))
    with pytest.raises(HinetDeployError, match="engines only load in the version that built them"):
        Restorer(engine)


def _gpu_capability() -> tuple[int, int]:
    from cuda.bindings import runtime as rt

    props = rt.cudaGetDeviceProperties(0)[1]
    return props.major, props.minor


@pytest.mark.gpu
@needs_rtx
@pytest.mark.skipif(_gpu_count() == 0, reason="needs an NVIDIA GPU")
def test_engine_matches_pytorch_on_gpu(rtx_engine, small_ckpt):
    """On a GPU TensorRT-RTX runs on, the engine matches PyTorch and takes numpy and torch alike; on
    one it does not (an H100, sm_90), the Restorer refuses with the reason, up front."""
    if not rtx_runs_on(_gpu_capability()):
        with pytest.raises(HinetDeployError, match="outside TensorRT-RTX's list .* need full TensorRT"):
            Restorer(rtx_engine)
        return
    import torch

    image = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    with Restorer(rtx_engine) as engine, Restorer(small_ckpt) as reference:
        a, b = engine(image), reference(image)
        on_gpu = engine(torch.from_numpy(image).cuda())
        for size in ((64, 64), (128, 96), (48, 80)):  # repeated calls at different sizes
            engine(image[:size[0], :size[1]])
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    np.testing.assert_array_equal(on_gpu.cpu().numpy(), a)


@pytest.fixture(scope="module")
def rtx_plugin_engine(small_ckpt, tmp_path_factory):
    return small_rtx_engine(small_ckpt, tmp_path_factory.mktemp("plugin-engine"), hin_plugin=True)


@needs_rtx
def test_a_plugin_engine_without_nvrtc_is_refused_in_one_line_before_the_gpu(rtx_plugin_engine,
                                                                           monkeypatch):
    import sys

    from hinet_deploy.engines.plugin import hin_plugin

    import cuda.bindings

    monkeypatch.setattr(hin_plugin, "_registered", {})  # a fresh process: nothing registered yet
    monkeypatch.setitem(sys.modules, "cuda.bindings.nvrtc", None)  # NVRTC not installed
    monkeypatch.delattr(cuda.bindings, "nvrtc", raising=False)  # nor imported before
    with pytest.raises(HinetDeployError, match="compiles its kernel with NVRTC, which cannot be "
                                               "loaded here .* install it with"):
        Restorer(rtx_plugin_engine)


@needs_rtx
def test_a_plugin_engine_of_another_plugin_version_is_refused(rtx_plugin_engine, tmp_path):
    def edit(sidecar, folder):
        assert sidecar["facts"]["hin_plugin_version"] == "1"
        sidecar["facts"]["hin_plugin_version"] = "7"

    engine = edited_engine_copy(rtx_plugin_engine, tmp_path, edit)
    with pytest.raises(HinetDeployError, match="holds version 7 of the HIN plugin; this "
                                               "hinet-deploy has version 1: rebuild"):
        Restorer(engine)


def test_runtime_cache_files_are_per_build_gpu_and_version(tmp_path, monkeypatch):
    from hinet_deploy.runtime.backends.tensorrt import RuntimeCacheFile

    monkeypatch.setenv("HINET_DEPLOY_CACHE", str(tmp_path / "cache"))
    engine = tmp_path / "m.engine"
    first = RuntimeCacheFile(engine, b'{"created": "1"}', "NVIDIA GeForce RTX 4090", (8, 9), "1.7.1")
    assert first.load() is None  # nothing yet: TensorRT-RTX compiles as without a cache
    assert first.save(b"kernels") and first.load() == b"kernels"
    assert first.path.parent == tmp_path / "cache" / "runtime-cache"
    assert not list(first.path.parent.glob(".*"))  # no temporary file left beside it
    others = [RuntimeCacheFile(engine, b'{"created": "2"}', "NVIDIA GeForce RTX 4090", (8, 9),
                               "1.7.1"),  # another build of the same name
              RuntimeCacheFile(engine, b'{"created": "1"}', "NVIDIA RTX A6000", (8, 6), "1.7.1"),
              RuntimeCacheFile(engine, b'{"created": "1"}', "NVIDIA GeForce RTX 4090", (8, 9),
                               "1.8.0")]
    assert len({first.path, *(o.path for o in others)}) == 4
    assert all(o.load() is None for o in others)
    again = RuntimeCacheFile(engine, b'{"created": "1"}', "NVIDIA GeForce RTX 4090", (8, 9), "1.7.1")
    assert again.load() == b"kernels"  # a second process finds the first one's kernels


def test_a_runtime_cache_that_cannot_be_written_costs_a_warning_only(tmp_path, monkeypatch):
    from hinet_deploy.runtime.backends.tensorrt import RuntimeCacheFile

    monkeypatch.setenv("HINET_DEPLOY_CACHE", "/proc/hinet-deploy-cache")
    cache = RuntimeCacheFile(tmp_path / "m.engine", b"{}", "GPU", (8, 6), "1.7.1")
    with pytest.warns(UserWarning, match="runtime cache not saved"):
        assert cache.save(b"kernels") is False
    assert cache.load() is None
