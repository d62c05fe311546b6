"""ONNX export: dynamic shapes that really work, verification that really refuses, atomic writes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import GOPRO_LIKE, REPO, random_net
from hinet_deploy.export.checkpoint import load_checkpoint, save_basicsr
from hinet_deploy.export.metadata import read_metadata
from hinet_deploy.export.onnx_export import export_onnx
from hinet_deploy.common.errors import HinetDeployError


def _torch_stage2(ckpt, x: np.ndarray) -> np.ndarray:
    net = load_checkpoint(ckpt).net
    with torch.no_grad():
        return net(torch.from_numpy(x))[1].numpy()


def test_to_onnx_script_round_trip_at_two_sizes(small_ckpt, tmp_path):
    out = tmp_path / "model.onnx"
    result = subprocess.run([sys.executable, str(REPO / "export/to_onnx.py"), "--ckpt",
                             str(small_ckpt), "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "max abs diff" in result.stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 32, 48), (3, 3, 80, 16)]:
        x = rng.random(shape, dtype=np.float32)
        got = session.run(None, {"input": x})[0]
        want = _torch_stage2(small_ckpt, x)
        assert got.shape == shape
        diff = np.abs(got - want).max()
        print(f"{shape}: max abs diff ORT vs PyTorch {diff:.2e}")
        assert diff < 1e-4


def test_metadata_and_hin_layout_in_graph(small_onnx):
    model = onnx.load(str(small_onnx))
    meta = read_metadata(model)
    assert meta["size_multiple"] == "16" and meta["outputs"] == "stage2"
    assert '"wf": 8' in meta["config"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("InstanceNormalization") == 10  # SIDD layout: 5 levels x 2 stages


def test_gopro_layout_has_four_hin_blocks_and_both_stages(tmp_path):
    ckpt = tmp_path / "g.pth"
    save_basicsr(random_net(GOPRO_LIKE).state_dict(), ckpt)
    out = tmp_path / "g.onnx"
    export_onnx(load_checkpoint(ckpt), out, both_stages=True, log=lambda m: None)
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["output_stage1", "output"]
    assert [n.op_type for n in model.graph.node].count("InstanceNormalization") == 4


def test_fixed_shape_export(small_ckpt, tmp_path):
    out = tmp_path / "fixed.onnx"
    export_onnx(load_checkpoint(small_ckpt), out, fixed_shape=(2, 32, 64), log=lambda m: None)
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 32, 64]


@pytest.mark.parametrize("shape", [(1, 30, 32), (0, 32, 32)])
def test_bad_fixed_shape_is_refused(small_ckpt, tmp_path, shape):
    with pytest.raises(HinetDeployError, match="multiples of 16"):
        export_onnx(load_checkpoint(small_ckpt), tmp_path / "x.onnx", fixed_shape=shape)


def test_failed_verification_writes_nothing(small_ckpt, tmp_path):
    out = tmp_path / "refused.onnx"
    out_dir_before = set(tmp_path.iterdir())
    # A negative tolerance no graph can meet: the export must stop before anything is written.
    with pytest.raises(HinetDeployError, match="the graph was not written"):
        export_onnx(load_checkpoint(small_ckpt), out, tolerance=-1.0, log=lambda m: None)
    assert set(tmp_path.iterdir()) == out_dir_before
