"""HIN block fusion: the rewrite, its CPU oracle, and the CUDA kernel (compiled here, run on a GPU)."""
from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from conftest import GOPRO_LIKE, REPO, SIDD_LIKE, random_net
from hinet_deploy.export.checkpoint import LoadedModel, random_model
from hinet_deploy.export.hin_fusion import (PLUGIN_OP, fold_hin_blocks, hin_reference,
                                           reference_op_class, unsplit_hin_blocks)
from hinet_deploy.export.onnx_export import export_onnx
from hinet_deploy.export.precision import to_fp16

KERNEL = REPO / "engines" / "plugin" / "hin_leaky.cu"


def _graph(loaded, tmp_path, name="m.onnx"):
    path = tmp_path / name
    export_onnx(loaded, path, verify_shapes=[], log=lambda m: None)
    return path


def _ops(model):
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("config, blocks", [(GOPRO_LIKE, 4), (SIDD_LIKE, 10)])
def test_fused_graph_matches_unfused(config, blocks, tmp_path):
    path = _graph(LoadedModel(random_net(config), config, [], None, None), tmp_path)
    fused, report = fold_hin_blocks(onnx.load(str(path)))
    assert report.fused == blocks and not report.skipped
    ops = _ops(fused)
    assert ops.count(PLUGIN_OP) == blocks and "InstanceNormalization" not in ops
    assert "Slice" not in ops
    unfused = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    evaluator = ReferenceEvaluator(fused, new_ops=[reference_op_class()])
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 32, 32), (2, 3, 16, 48)]:
        x = rng.random(shape, dtype=np.float32)
        diff = np.abs(evaluator.run(None, {"input": x})[0] - unfused.run(None, {"input": x})[0]).max()
        print(f"{shape}: max abs diff fused (reference op) vs unfused (ORT) {diff:.1e}")
        assert diff < 1e-4


@pytest.mark.parametrize("config, blocks", [(GOPRO_LIKE, 4), (SIDD_LIKE, 10)])
def test_unsplit_blocks_compute_the_same(config, blocks, tmp_path):
    """The layout OpenVINO INT8 is built from: no split, no concatenation in any HIN block, every
    instance norm over all channels, and the outputs of the graph as exported."""
    path = _graph(LoadedModel(random_net(config), config, [], None, None), tmp_path)
    exported = onnx.load(str(path))
    unsplit, report = unsplit_hin_blocks(exported)
    assert report.fused == blocks and not report.skipped
    ops = _ops(unsplit)
    assert "Slice" not in ops and ops.count("InstanceNormalization") == blocks
    assert ops.count("Concat") == _ops(exported).count("Concat") - blocks  # the U-Net's remain
    assert unsplit.metadata_props == exported.metadata_props
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(unsplit.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, 32, 48), dtype=np.float32)
    assert np.abs(before.run(None, {"input": x})[0] - after.run(None, {"input": x})[0]).max() < 1e-5


def test_fp16_graph_with_casts_fuses(small_onnx, tmp_path):
    half = to_fp16(small_onnx, tmp_path / "half.onnx")
    fused, report = fold_hin_blocks(onnx.load(str(half)))
    assert report.fused == 10
    assert _ops(fused).count("Cast") == 2  # only the graph's FP32 input and output casts remain


def test_fresh_weights_through_identity_nodes_fuse(tmp_path):
    """Fresh instance-norm scales are all equal: the exporter shares them through Identity nodes."""
    loaded = LoadedModel(random_net(GOPRO_LIKE), GOPRO_LIKE, [], None, None)
    import torch

    with torch.no_grad():
        for name, p in loaded.net.named_parameters():
            if ".norm." in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
    model = onnx.load(str(_graph(loaded, tmp_path)))
    assert "Identity" in _ops(model)
    assert fold_hin_blocks(model)[1].fused == 4


def test_anything_else_is_left_alone_with_a_warning(small_onnx):
    model = onnx.load(str(small_onnx))
    concat = next(n for n in model.graph.node if n.op_type == "Concat"
                  and any("norm" in i for i in n.input))
    concat.input[0], concat.input[1] = concat.input[1], concat.input[0]  # norm half second
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused, report = fold_hin_blocks(model)
    assert report.fused == 9 and len(report.skipped) == 1
    assert "left unfused" in str(caught[0].message)
    assert _ops(fused).count("InstanceNormalization") == 1


@pytest.mark.slow
@pytest.mark.parametrize("variant, blocks", [("gopro", 4), ("sidd-1x", 10)])
def test_official_variants(variant, blocks, tmp_path):
    model = onnx.load(str(_graph(random_model(variant), tmp_path)))
    assert fold_hin_blocks(model)[1].fused == blocks


def test_reference_folds_the_affine_like_instance_norm():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (2, 6, 5, 7)).astype(np.float32)
    gamma, beta = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    out = hin_reference(x, gamma, beta, 1e-5, 0.2)
    first = x[:, :3]
    normed = (first - first.mean((2, 3), keepdims=True)) / np.sqrt(
        first.var((2, 3), keepdims=True) + 1e-5) * gamma[:, None, None] + beta[:, None, None]
    expected = np.concatenate([normed, x[:, 3:]], 1)
    expected = np.where(expected > 0, expected, 0.2 * expected)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
def test_kernel_compiles_with_nvcc(tmp_path):
    for arch in ("sm_75", "sm_90"):
        result = subprocess.run(["nvcc", f"-arch={arch}", "-c", str(KERNEL), "-o",
                                 str(tmp_path / f"{arch}.o")], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def _cuda_available():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float16, 2e-2)])
@pytest.mark.parametrize("shape", [(1, 8, 16, 16), (2, 64, 37, 53), (1, 32, 256, 256),
                                   (1, 16, 720, 1280), (3, 6, 301, 77), (1, 2, 1, 1),
                                   # H*W in 12189..12288: once sent to the shared-memory kernel,
                                   # whose launch the 48 KiB limit then rejected
                                   (1, 8, 96, 128), (1, 8, 128, 96), (1, 8, 64, 192),
                                   (1, 8, 110, 111), (1, 8, 110, 109)])
def test_kernel_matches_reference_on_gpu(dtype, tol, shape):
    """The kernels as the plugin's enqueue runs them: NVRTC for this GPU, cuda-python launches,
    both the shared-memory and the split path (H*W not a multiple of the block size included)."""
    import cupy as cp

    from hinet_deploy.engines.plugin.hin_plugin import HinKernel, workspace_bytes

    rng = np.random.default_rng(2)
    c = shape[1]
    x = rng.normal(0.5, 3.0, shape).astype(dtype)
    gamma = rng.normal(1, 0.3, c // 2).astype(np.float32)
    beta = rng.normal(0, 0.3, c // 2).astype(np.float32)
    kernel = HinKernel(gamma, beta)
    d_x, d_y = cp.asarray(x), cp.empty(shape, dtype)
    workspace = cp.empty(max(workspace_bytes(shape), 4), cp.uint8)
    kernel.launch(dtype, shape, d_x.data.ptr, d_y.data.ptr, 1e-5, 0.2,
                  cp.cuda.get_current_stream().ptr, workspace.data.ptr)
    want = hin_reference(x.astype(np.float32), gamma, beta, 1e-5, 0.2)
    np.testing.assert_allclose(cp.asnumpy(d_y).astype(np.float32), want, rtol=tol, atol=tol)


needs_trt_module = pytest.mark.skipif(
    not any(__import__("importlib").util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx")),
    reason="needs tensorrt or tensorrt_rtx for the plugin base classes")


def _trt():
    import importlib

    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise AssertionError("unreachable: guarded by needs_trt_module")


@needs_trt_module
def test_plugin_fields_round_trip_through_serialisation():
    from hinet_deploy.engines.plugin.hin_plugin import plugin_classes

    trt = _trt()
    _, creator_class = plugin_classes(trt)
    creator = creator_class()
    assert (creator.name, creator.plugin_namespace, creator.plugin_version) == \
        ("HalfInstanceNormLeakyReLU", "hinet_deploy", "1")
    fields = trt.PluginFieldCollection([
        trt.PluginField("epsilon", np.array([1e-5], np.float32), trt.PluginFieldType.FLOAT32),
        trt.PluginField("negative_slope", np.array([0.2], np.float32), trt.PluginFieldType.FLOAT32),
        trt.PluginField("gamma", np.array([1.5, 0.5], np.float32), trt.PluginFieldType.FLOAT32),
        trt.PluginField("beta", np.array([0.1, -0.1], np.float32), trt.PluginFieldType.FLOAT32)])
    plugin = creator.create_plugin("n", fields, trt.TensorRTPhase.BUILD)
    again = creator.create_plugin("n", plugin.get_fields_to_serialize(), trt.TensorRTPhase.RUNTIME)
    for name in ("epsilon", "negative_slope", "gamma", "beta"):
        np.testing.assert_array_equal(again.fields[name], plugin.fields[name])
    np.testing.assert_allclose(again.fields["gamma"], [1.5, 0.5])
    assert plugin.clone().fields["beta"].tolist() == plugin.fields["beta"].tolist()


@needs_trt_module
def test_plugin_takes_linear_float_or_half_with_matching_output():
    from hinet_deploy.engines.plugin.hin_plugin import plugin_classes

    trt = _trt()
    plugin_class, _ = plugin_classes(trt)
    plugin = plugin_class({"epsilon": [1e-5], "negative_slope": [0.2], "gamma": [1.0],
                           "beta": [0.0]})

    def desc(dtype):
        d = trt.DynamicPluginTensorDesc()
        d.desc.type, d.desc.format = dtype, trt.TensorFormat.LINEAR
        return d

    half, single, int8 = trt.DataType.HALF, trt.DataType.FLOAT, trt.DataType.INT8
    assert plugin.supports_format_combination(0, [desc(half), desc(half)], 1)
    assert plugin.supports_format_combination(1, [desc(single), desc(single)], 1)
    assert not plugin.supports_format_combination(1, [desc(single), desc(half)], 1)
    assert not plugin.supports_format_combination(0, [desc(int8), desc(int8)], 1)


def test_launch_plan_caches_small_planes_and_splits_large_ones():
    from hinet_deploy.engines.plugin.hin_plugin import launch_plan, workspace_bound, workspace_bytes

    assert launch_plan((2, 64, 64, 64)) == (0, 64 * 64 * 4)  # 16 KB: one block, plane cached
    assert launch_plan((1, 64, 720, 1280)) == (16, 0)  # 64 planes -> 16 blocks each
    assert launch_plan((1, 2, 1, 12289)) == (32, 0)  # capped: one warp merges the partials
    assert launch_plan((4, 512, 128, 128)) == (1, 0)  # enough planes already
    assert workspace_bytes((1, 64, 720, 1280)) == 32 * 16 * 3 * 4
    assert workspace_bytes((2, 64, 64, 64)) == 0
    # a smaller batch can need more splits than the largest: the bound covers every batch size
    sizes = [workspace_bytes((k, 64, 720, 1280)) for k in range(1, 5)]
    assert workspace_bound((4, 64, 720, 1280)) == max(sizes) > sizes[-1]