"""Parameters and multiply-accumulates of an exported graph at a given input size.

Two conventions, side by side (the paper's 170.7 G for GoPro is reproduced only by the second):
- `macs`: the exact count. Conv: output elements x (C_in/groups) x k_h x k_w. ConvTranspose: every
  input element meets (C_out/groups) x k_h x k_w weights, so input elements x that.
- `macs_paper`: the convention behind the paper's 170.7 G for GoPro at 256x256 (the `thop` counter):
  a ConvTranspose counted like a Conv over its output (output elements x C_in x k_h x k_w, 4x the
  true count for HINet's 2x2 stride-2 upsamplers), plus one operation per output element for each bias.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper, shape_inference

from hinet_deploy.common.errors import HinetDeployError


@dataclass
class MacCount:
    height: int
    width: int
    params: int
    macs: int  # exact conv + transposed-conv multiply-accumulates
    macs_paper: int  # the paper's (thop) convention
    conv_macs: int
    deconv_macs: int
    deconv_macs_paper: int
    bias_ops: int

    def as_dict(self) -> dict:
        return asdict(self)


def _fix_input_shape(model: onnx.ModelProto, height: int, width: int) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, None, height, width)):
        if value is not None:
            dim.Clear()
            dim.dim_value = value


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def count_params(model: onnx.ModelProto) -> int:
    """Float weights per use: the exporter merges equal initializers (freshly initialised instance-norm
    scales are all ones) and reaches them through Identity nodes, so initializers alone undercount."""
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer
             if helper.tensor_dtype_to_np_dtype(init.data_type).kind == "f"}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in sizes:
            sizes[node.output[0]] = sizes[node.input[0]]
        else:
            total += sum(sizes.get(name, 0) for name in node.input)
    return total


def _sized_convs(model: onnx.ModelProto, height: int, width: int):
    """(node, input shape, output shape, weight shape) of every Conv/ConvTranspose at batch 1 and
    the given input size (a copy of the graph is fixed to that size)."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    _fix_input_shape(model_copy, height, width)
    shapes = _shapes(model_copy)
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        if node.output[0] not in shapes or node.input[1] not in weights:
            raise HinetDeployError(f"cannot size {node.op_type} {node.name!r} at {height}x{width}: "
                                   f"its output shape or weights are not static")
        yield node, shapes.get(node.input[0]), shapes[node.output[0]], weights[node.input[1]]


def _exact_macs(op_type: str, in_shape, out_shape, weight) -> int:
    kernel = int(np.prod(weight[2:]))
    if op_type == "Conv":  # weight (C_out, C_in/g, k, k)
        return int(np.prod(out_shape)) * weight[1] * kernel
    return int(np.prod(in_shape)) * weight[1] * kernel  # ConvTranspose: weight (C_in, C_out/g, k, k)


def node_macs(model: onnx.ModelProto, height: int, width: int) -> dict[str, int]:
    """Exact multiply-accumulates of each Conv/ConvTranspose node, by node name."""
    return {node.name: _exact_macs(node.op_type, i, o, w)
            for node, i, o, w in _sized_convs(model, height, width)}


def count_macs(model: onnx.ModelProto, height: int, width: int) -> MacCount:
    """Counts at batch 1 and the given input size."""
    conv = deconv = deconv_paper = bias_ops = 0
    for node, in_shape, out_shape, weight in _sized_convs(model, height, width):
        out_elems = int(np.prod(out_shape))
        if node.op_type == "Conv":
            conv += _exact_macs(node.op_type, in_shape, out_shape, weight)
        else:
            deconv += _exact_macs(node.op_type, in_shape, out_shape, weight)
            deconv_paper += out_elems * weight[0] * int(np.prod(weight[2:]))
        if len(node.input) > 2 and node.input[2]:
            bias_ops += out_elems
    return MacCount(height, width, count_params(model), conv + deconv, conv + deconv_paper + bias_ops,
                    conv, deconv, deconv_paper, bias_ops)
