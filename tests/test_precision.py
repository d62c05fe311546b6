"""Precision rewrites of the ONNX graph, run in ONNX Runtime through the Restorer."""
from __future__ import annotations

import numpy as np
import onnx

from hinet_deploy.export.precision import float_nodes, to_fp16
from hinet_deploy.runtime import Restorer


def test_fp16_io_graph_runs_in_the_restorer(small_onnx, tmp_path):
    half = to_fp16(small_onnx, tmp_path / "io16.onnx", io_fp16=True)
    model = onnx.load(str(half))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    inits = {i.name: i for i in model.graph.initializer}
    assert norms and all(inits[n.input[1]].data_type == onnx.TensorProto.FLOAT for n in norms)
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    with Restorer(small_onnx) as fp32, Restorer(half) as fp16:
        a, b = fp32(image), fp16(image)
    assert b.dtype == np.uint8 and b.shape == image.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_float_layers_select_the_image_facing_convs(small_onnx):
    names = float_nodes(onnx.load(str(small_onnx)), ("conv_01", "sam12"))
    assert sorted(names) == ["/net/conv_01/Conv", "/net/sam12/conv1/Conv", "/net/sam12/conv2/Conv",
                             "/net/sam12/conv3/Conv"]
