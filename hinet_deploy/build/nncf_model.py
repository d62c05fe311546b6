"""NNCF's quantized model for OpenVINO and its float switches: what the INT8 build for OpenVINO
(build.openvino_int8) and its measurement (build.sensitivity, target `openvino`) share.

The graph NNCF quantizes has its HIN blocks unsplit (LAYOUT below); the FP32 reference of every
measurement is the graph as exported (the same numbers). NNCF (`nncf.quantize` with its
defaults: symmetric INT8, per-channel weights, fast bias correction) quantizes the model as OpenVINO reads the FP32 graph, not the ONNX graph: NNCF's Q/DQ
ONNX graph of the demo model comes out of OpenVINO 2026.4 on an AVX-512 VNNI CPU (AMD EPYC) at
21 dB from FP32 while ONNX Runtime runs the same graph at 45 dB (an INT8 strided convolution
feeding another INT8 convolution goes wrong in OpenVINO's CPU plugin; those two convolutions alone
in INT8 reproduce it), and the model NNCF quantizes in OpenVINO's own form runs at 45 dB there,
and faster (README: CPU). It is made once per graph, calibration crops, NNCF and OpenVINO version
and kept in the project's cache.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.files import cache_dir
from hinet_deploy.common.lazy import require
from hinet_deploy.common.progress import say

NNCF_PURPOSE = "an INT8 build for OpenVINO (NNCF's quantizer)"
# The graph NNCF quantizes: the HIN blocks without their split and concatenation. Measured on the
# demo model in OpenVINO 2026.4, 2 threads (benchmarks/cpu_int8.py): all-INT8 1.38x BF16 at 256x256
# and 1.57x at 1280x720 as exported, 1.57x and 1.81x unsplit (the split, the concatenation and the
# reorders around them cost more than normalizing every channel); 44.1 and 43.7 dB from FP32.
LAYOUT = "unsplit-hin"
# Left in float by NNCF: instance norm (OpenVINO's MVN). NNCF quantizes its input and output by
# default; on the demo model, unsplit, that costs 1.6 dB (all-INT8 43.24 dB from FP32 on the
# held-out crops, 44.87 with MVN in float) for 4 % of the time (1.55x against 1.49x BF16 at
# 256x256).
FLOAT_OPS = ("MVN",)
# Weights in 7 bits in every layer (NNCF's overflow fix, "enable"; its default fixes the first layer
# only): without VNNI or AMX, OpenVINO's INT8 kernels multiply-add u8 x s8 pairs into 16 bits that
# saturate. With the default, the demo model's all-INT8 output is 44.87 dB from FP32 on this CPU's
# VNNI kernels and 40.33 dB when OpenVINO is held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2); fixed
# everywhere, 44.56 dB on both: the same model, the same numbers on any x86 CPU.
OVERFLOW_FIX = "enable"
# The automatic choice's default target for OpenVINO INT8, PSNR of its output against FP32 on the
# held-out crops. Measured on the demo model (the greedy choice at each target, then the denoising
# gain on the three whole held-out photographs against FP32's; all-INT8 is 44.56 dB): target 45.0
# -> one float layer (1.5 % of MACs), 0.053 dB less gain; 45.5 -> three (3.3 %), 0.056 dB; 46.0
# -> four (4.8 %), 0.042 dB; 46.5 -> six (6.6 %), 0.046 dB; 47.0 -> eight (9.7 %), 0.040 dB. Every
# target from 45 dB keeps the gain within 0.1 dB; 46.0 is the least loss before it flattens. (Those
# choices ranked layers by MACs; ranked by seconds, as now, 46.0 keeps five layers, 0.052 dB.)
OPENVINO_TARGET_DB = 46.0
CONVOLUTIONS = ("Convolution", "ConvolutionBackpropData")  # OpenVINO's Conv and ConvTranspose
BIASLESS = "/WithoutBiases"  # OpenVINO's name for a convolution whose ONNX node adds a bias


def recipe() -> str:
    """What makes NNCF's model, in a name: the layout, the float ops, the overflow fix and the
    versions of NNCF and OpenVINO. It keys every cache of this model and of its measurements."""
    from importlib import metadata

    versions = []
    for package in ("nncf", "openvino"):
        try:
            versions.append(f"{package}{metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package}-missing")
    return "-".join([LAYOUT, "float", *FLOAT_OPS, "overflow", OVERFLOW_FIX, *versions])


def require_nncf():
    """nncf, or one line naming the extra that brings it."""
    return require("nncf", NNCF_PURPOSE)


def _openvino():
    return require("openvino", "INT8 models for OpenVINO")


def nncf_all_int8(fp32: Path, graph_sha256: str, crops, log=say):
    """NNCF's quantized model of `fp32` (every layer it quantizes INT8) on the calibration crops,
    an openvino.Model; made once per graph, crops and NNCF version (the project's cache)."""
    nncf = require_nncf()
    ov = _openvino()
    cache = cache_dir() / "nncf" / f"{graph_sha256[:16]}-{crops.fingerprint()}-{recipe()}.xml"
    core = ov.Core()
    if cache.is_file() and cache.with_suffix(".bin").is_file():
        log(f"NNCF's INT8 model reused from {cache}")
        return core.read_model(str(cache))
    import logging

    logging.getLogger("nncf").setLevel(logging.ERROR)  # its advice is about other model kinds
    model = core.read_model(unsplit_graph(fp32, log))
    name = model.inputs[0].get_any_name()
    log(f"quantizing with NNCF {nncf.__version__} on {len(crops.crops)} calibration crops of "
        f"{crops.crops[0].shape[-1]}")
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       OverflowFix)

    try:
        quantized = nncf.quantize(
            model, nncf.Dataset([{name: c[None]} for c in crops.crops]),
            subset_size=len(crops.crops), ignored_scope=nncf.IgnoredScope(types=list(FLOAT_OPS)),
            advanced_parameters=AdvancedQuantizationParameters(
                overflow_fix=OverflowFix(OVERFLOW_FIX)))
    except Exception as exc:  # NNCF's own errors: one line
        raise HinetDeployError(f"NNCF could not quantize {fp32}: {first_line(exc)}") from exc
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_ir(quantized, cache)
    return core.read_model(str(cache))  # as every later build reads it


def openvino_switches(fp32: Path, graph_sha256: str, crops, fp32_onnx, log=say):
    """NNCF's all-INT8 model of `fp32` with its float switches (fp32_onnx: the graph, loaded)."""
    quantized = nncf_all_int8(fp32, graph_sha256, crops, log)
    return OpenVinoSwitches(quantized, _openvino().Core().read_model(str(fp32)), fp32_onnx)


def unsplit_graph(fp32: Path, log=say) -> bytes:
    """The FP32 graph with its HIN blocks unsplit (export.hin_fusion.unsplit_hin_blocks), as
    serialised ONNX: what NNCF quantizes."""
    import onnx

    from hinet_deploy.export.hin_fusion import unsplit_hin_blocks

    rewritten, report = unsplit_hin_blocks(onnx.load(str(fp32)))
    log(f"{report.fused} HIN blocks normalize half their channels without a split and a "
        f"concatenation" + (f" ({len(report.skipped)} instance norms left as they are)"
                            if report.skipped else ""))
    return rewritten.SerializeToString()


def save_ir(model, xml: Path) -> None:
    """An openvino.Model as IR with its FP32 weights kept: MODEL.xml and MODEL.bin, both in place
    or neither (the weights first: an .xml is never there without its .bin)."""
    ov = _openvino()
    with tempfile.TemporaryDirectory(prefix=".hinet-ir-", dir=xml.parent) as tmp:
        ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        shutil.move(str(Path(tmp) / "model.bin"), xml.with_suffix(".bin"))
        shutil.move(str(Path(tmp) / "model.xml"), xml)


def _convolutions(model) -> dict:
    """{ONNX node name: OpenVINO convolution} of a model read from an exported graph."""
    return {op.get_friendly_name().removesuffix(BIASLESS): op for op in model.get_ordered_ops()
            if op.get_type_name() in CONVOLUTIONS}


def _bias_add(conv, onnx_name: str):
    """The Add that puts back the ONNX node's bias after a convolution, or None."""
    for target in conv.output(0).get_target_inputs():
        node = target.get_node()
        if node.get_type_name() == "Add" and node.get_friendly_name() == onnx_name:
            return node
    return None


def _value(output):
    """The value of a constant subgraph's output (a Constant, or a Reshape of one) as numpy."""
    import numpy as np

    node = output.get_node()
    if node.get_type_name() == "Constant":
        return np.array(node.get_data())
    if node.get_type_name() in ("Reshape", "Unsqueeze", "Convert"):
        return _value(node.input_value(0)).reshape(tuple(output.get_shape())).astype(np.float32)
    raise HinetDeployError(f"cannot read the FP32 value of {node.get_friendly_name()} "
                           f"({node.get_type_name()})")


class OpenVinoSwitches:
    """The INT8 convolutions of NNCF's quantized model, each switchable back to float: a layer in
    float reads its activation from before its FakeQuantize (which stays for any other reader),
    and takes the FP32 model's weights and bias (NNCF's bias correction rewrote the INT8 layers'
    biases). `floated(layers)` returns a new model; the quantized one is left as it is."""

    def __init__(self, quantized, fp32, fp32_onnx):
        from hinet_deploy.export.precision import layer_name

        self.model = quantized
        onnx_nodes = {node.name: node for node in fp32_onnx.graph.node}
        fp32_convs = _convolutions(fp32)
        self.nodes = {}  # layer -> the FP32 graph's onnx.NodeProto (names, MACs)
        self._fp32 = {}  # layer -> (weights, bias or None) as numpy
        for name, conv in _convolutions(quantized).items():
            if conv.input_value(0).get_node().get_type_name() != "FakeQuantize" or \
                    name not in fp32_convs or name not in onnx_nodes:
                continue  # already float: nothing to switch
            layer = layer_name(onnx_nodes[name])
            self.nodes[layer] = onnx_nodes[name]
            source = fp32_convs[name]
            add = _bias_add(source, name)
            self._fp32[layer] = (_value(source.input_value(1)),
                                 None if add is None else _value(add.input_value(1)))

    @property
    def layers(self) -> list[str]:
        return list(self.nodes)

    def floated(self, layers):
        """A copy of the quantized model with `layers` in float."""
        from openvino import opset13

        unknown = [layer for layer in layers if layer not in self.nodes]
        if unknown:
            raise HinetDeployError(f"not an INT8 convolution of this model: {', '.join(unknown)}")
        model = self.model.clone()
        convs = _convolutions(model)
        for layer in layers:
            name = self.nodes[layer].name
            conv = convs[name]
            weights, bias = self._fp32[layer]
            quantize = conv.input_value(0).get_node()
            conv.input(0).replace_source_output(quantize.input_value(0))
            conv.input(1).replace_source_output(opset13.constant(weights).output(0))
            add = _bias_add(conv, name)
            if add is not None and bias is not None:
                add.input(1).replace_source_output(opset13.constant(bias).output(0))
        model.validate_nodes_and_infer_types()
        return model


