"""Folds each Half-Instance-Norm block of an exported HINet into one node for the fused plugin.

A HIN block as the exporter writes it (opset 17, torch.chunk -> two Slice nodes), with the FP16 graph's casts optional:

    X -> Slice[0:C/2] -> (Cast f32) -> InstanceNormalization(gamma, beta) -> (Cast f16) -+
    X -> Slice[C/2:C] ----------------------------------------------------------------- Concat(1)
                                                                                         -> LeakyRelu

(Split(X, 2) in place of the two Slices is recognised too.) It becomes one node
`HalfInstanceNormLeakyReLU` in the `hinet_deploy` domain, the plugin's name and namespace, with
epsilon, negative_slope and gamma/beta as attributes, so the plugin can fold the affine into one
multiply-add per element. Anything that does not match exactly is left untouched, with a warning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx

from hinet_deploy.export.hin_spec import NODE_LOOKUP_ATTRS, PLUGIN_DOMAIN, PLUGIN_OP


@dataclass
class FusionReport:
    fused: int = 0
    skipped: list[str] = field(default_factory=list)  # "node name: reason"


def hin_reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float,
                  slope: float) -> np.ndarray:
    """The fused op, the oracle of the rewrite and of the kernel: statistics in float64 here."""
    half = gamma.size
    normed = x[:, :half].astype(np.float64)
    mean = normed.mean(axis=(2, 3), keepdims=True)
    var = normed.var(axis=(2, 3), keepdims=True)
    scale = gamma.reshape(1, -1, 1, 1) / np.sqrt(var + epsilon)
    shift = beta.reshape(1, -1, 1, 1) - mean * scale
    y = np.concatenate([normed * scale + shift, x[:, half:].astype(np.float64)], axis=1)
    return np.where(y >= 0, y, slope * y).astype(x.dtype)


class _NoMatch(Exception):
    pass


def _only_consumer(tensor):
    if len(tensor.outputs) != 1:
        raise _NoMatch(f"{tensor.name} has {len(tensor.outputs)} consumers")
    return tensor.outputs[0]


def _skip_cast(tensor, forward: bool):
    """Steps over one Cast after (forward) or before (backward) the instance norm."""
    if forward:
        node = _only_consumer(tensor)
        return node.outputs[0] if node.op == "Cast" else tensor
    node = tensor.inputs[0] if tensor.inputs else None
    return node.inputs[0] if node is not None and node.op == "Cast" else tensor


def _constant(tensor) -> np.ndarray:
    import onnx_graphsurgeon as gs

    while not isinstance(tensor, gs.Constant):
        producer = tensor.inputs[0] if tensor.inputs else None
        if producer is None or producer.op not in ("Identity", "Constant"):
            raise _NoMatch(f"{tensor.name} is not a constant")
        if producer.op == "Constant":
            return np.asarray(producer.attrs["value"].values)
        tensor = producer.inputs[0]
    return np.asarray(tensor.values)


def _channel_slice(node) -> tuple[object, int, int]:
    """(source, start, end) of a Slice over axis 1 with unit step."""
    if node is None or node.op != "Slice":
        raise _NoMatch("not a Slice")
    starts, ends = _constant(node.inputs[1]), _constant(node.inputs[2])
    axes = _constant(node.inputs[3]) if len(node.inputs) > 3 else np.array([0])
    steps = _constant(node.inputs[4]) if len(node.inputs) > 4 else np.array([1])
    if axes.tolist() != [1] or steps.tolist() != [1]:
        raise _NoMatch("Slice is not a unit-step slice of the channel axis")
    return node.inputs[0], int(starts[0]), int(ends[0])


def _halves(norm_in, other):
    """The tensor X both halves come from, and C/2; checks they are its two channel halves."""
    first, second = norm_in.inputs[0] if norm_in.inputs else None, \
        other.inputs[0] if other.inputs else None
    if first is not None and first is second and first.op == "Split":
        if first.attrs.get("axis", 0) != 1 or len(first.outputs) != 2 \
                or first.outputs[0] is not norm_in:
            raise _NoMatch("Split is not an even split of the channel axis into two")
        return first.inputs[0], None
    src_a, start_a, end_a = _channel_slice(first)
    src_b, start_b, end_b = _channel_slice(second)
    if src_a is not src_b or start_a != 0 or start_b != end_a or end_b < 2 * end_a:
        raise _NoMatch("the two Slices are not the halves [0:C/2] and [C/2:C] of one tensor")
    return src_a, end_a


def _match(inorm):
    """Returns (X, LeakyRelu node, plugin attrs) for one instance norm, or raises _NoMatch."""
    norm_in = _skip_cast(inorm.inputs[0], forward=False)
    norm_out = _skip_cast(inorm.outputs[0], forward=True)
    concat = _only_consumer(norm_out)
    if concat.op != "Concat" or concat.attrs.get("axis") != 1 or len(concat.inputs) != 2 \
            or concat.inputs[0] is not norm_out:
        raise _NoMatch("the norm does not feed the first input of a channel Concat")
    x, half = _halves(norm_in, concat.inputs[1])
    gamma = _constant(inorm.inputs[1]).astype(np.float32)
    beta = _constant(inorm.inputs[2]).astype(np.float32)
    if half is not None and gamma.size != half:
        raise _NoMatch(f"gamma has {gamma.size} channels, the slice {half}")
    relu = _only_consumer(concat.outputs[0])
    if relu.op != "LeakyRelu":
        raise _NoMatch("the Concat does not feed a LeakyRelu")
    attrs = {"epsilon": float(inorm.attrs.get("epsilon", 1e-5)),
             "negative_slope": float(relu.attrs.get("alpha", 0.01)),
             "gamma": gamma.tolist(), "beta": beta.tolist(), **NODE_LOOKUP_ATTRS}
    return x, relu, attrs


def _blocks(graph, report: FusionReport):
    """(instance norm, X, LeakyRelu node, plugin attrs) of each HIN block of a graphsurgeon graph;
    each instance norm that is not one is recorded in `report.skipped` with why."""
    for inorm in [n for n in graph.nodes if n.op == "InstanceNormalization"]:
        try:
            yield (inorm, *_match(inorm))
        except _NoMatch as exc:
            report.skipped.append(f"{inorm.name}: {exc}")


def fold_hin_blocks(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FusionReport]:
    """Returns the rewritten model and what was fused; the input model is not modified."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    report = FusionReport()
    for inorm, x, relu, attrs in _blocks(graph, report):
        out = relu.outputs[0]
        relu.outputs = []  # detach: cleanup() removes everything that no longer reaches an output
        graph.nodes.append(gs.Node(PLUGIN_OP, name=f"{inorm.name}_fused", domain=PLUGIN_DOMAIN,
                                   attrs=attrs, inputs=[x], outputs=[out]))
        report.fused += 1
    graph.cleanup().toposort()
    fused = gs.export_onnx(graph)
    if not any(op.domain == PLUGIN_DOMAIN for op in fused.opset_import) and report.fused:
        fused.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    for entry in report.skipped:
        warnings.warn(f"HIN block left unfused: {entry}", stacklevel=2)
    return fused, report


def reference_op_class():
    """The fused op for onnx.reference.ReferenceEvaluator, so rewritten graphs run on any CPU."""
    from onnx.reference.op_run import OpRun

    class HalfInstanceNormLeakyReLU(OpRun):
        op_domain = PLUGIN_DOMAIN

        def _run(self, x, epsilon=None, negative_slope=None, gamma=None, beta=None,
                 plugin_namespace=None, plugin_version=None):  # the parser's lookup attributes
            return (hin_reference(x, np.asarray(gamma, np.float32), np.asarray(beta, np.float32),
                                  epsilon, negative_slope),)

    return HalfInstanceNormLeakyReLU


def unsplit_hin_blocks(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FusionReport]:
    """Each HIN block without its split and concatenation, for backends where those cost more than
    the arithmetic they save (OpenVINO on the CPU: README): the instance norm runs over all C
    channels with gamma and beta padded by zeros, so the second half comes out 0, and X times a
    0/1 channel mask adds that half back as it was:

        X -> InstanceNormalization(gamma|0, beta|0) -> Add(X * (0|1)) -> LeakyRelu

    The same numbers as the block (the second half's statistics are computed and multiplied by
    0); the input model is not modified."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    report = FusionReport()
    for inorm, x, relu, attrs in _blocks(graph, report):
        half = len(attrs["gamma"])
        channels = _channels(x, half)
        pad = np.zeros(channels - half, np.float32)
        gamma = np.concatenate([np.asarray(attrs["gamma"], np.float32), pad])
        beta = np.concatenate([np.asarray(attrs["beta"], np.float32), pad])
        keep = np.concatenate([np.zeros(half, np.float32), np.ones(channels - half, np.float32)])
        name = inorm.name
        normed = gs.Variable(f"{name}/all_channels", dtype=np.float32)
        kept = gs.Variable(f"{name}/kept_half", dtype=np.float32)
        joined = gs.Variable(f"{name}/joined", dtype=np.float32)
        graph.nodes += [
            gs.Node("InstanceNormalization", name=f"{name}/all_channels", inputs=[
                x, gs.Constant(f"{name}/gamma_padded", gamma),
                gs.Constant(f"{name}/beta_padded", beta)], outputs=[normed],
                attrs={"epsilon": attrs["epsilon"]}),
            gs.Node("Mul", name=f"{name}/keep", outputs=[kept], inputs=[
                x, gs.Constant(f"{name}/keep_mask", keep.reshape(1, -1, 1, 1))]),
            gs.Node("Add", name=f"{name}/join", inputs=[normed, kept], outputs=[joined])]
        relu.inputs[0] = joined
        report.fused += 1
    graph.cleanup().toposort()
    rewritten = gs.export_onnx(graph)
    rewritten.metadata_props.extend(model.metadata_props)
    rewritten.ir_version = model.ir_version
    return rewritten, report


def _channels(x, half: int) -> int:
    """C of the block's input: its static channel count, else twice the normed half."""
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) == 4 and isinstance(shape[1], (int, np.integer)):
        return int(shape[1])
    return 2 * half
