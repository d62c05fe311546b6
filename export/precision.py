"""Precision lives in the ONNX graph (TensorRT 11 and TensorRT-RTX are strongly typed).

- FP16: every op in half precision except InstanceNormalization, which keeps FP32 statistics
  behind Casts: its mean/variance over a whole image is the classic FP16 overflow risk for HINet.
  I/O stays FP32 unless asked (then the engine takes and returns half-precision tensors).
- INT8: explicit QuantizeLinear/DequantizeLinear pairs from onnxruntime's static quantizer: symmetric
  INT8, per-channel weights, Conv/ConvTranspose inputs only, float biases (TensorRT-RTX's parser
  refuses DequantizeLinear on int32 biases), ranges from a calibration data reader the caller passes.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import atomic_path

if TYPE_CHECKING:  # imported where used, so the CLI starts without onnx
    import onnx

FP32_OPS = ("InstanceNormalization",)
CALIBRATION_METHODS = ("entropy", "percentile", "minmax")
# Measured on the demo model (README): percentile kept 43 dB to the FP32 output; entropy and min-max
# gave identical ranges with onnxruntime 1.32 and 41 dB.
DEFAULT_CALIBRATION = "percentile"
# Layers left in float by default: the image-in convs, the image-out conv and the SAM convs that make
# the stage-1 image and the sigmoid gate (inputs or outputs are images); 6 of 93 convs, 2.9 % of the
# MACs. Measured on the demo model (`hinet-deploy sensitivity`, README): 43.60 dB to the FP32 output
# against 43.51 all-INT8, while `--float-layers auto` reaches 45.4 dB with 1.9 % of the MACs; the
# list stays the default because it costs no measurement. `--float-layers` with no names: all-INT8.
DEFAULT_FLOAT_LAYERS = ("conv_01", "conv_02", "last", "sam12")
CALIBRATION_STRIDE = 1  # crops per collection pass (see to_int8)
# Percentile calibration keeps this fraction of each activation histogram (ORT's default is 99.999).
PERCENTILE = 99.999


def _inline_initializer_identities(model: onnx.ModelProto) -> None:
    """Points consumers of `Identity(initializer)` at the initializer and drops the Identity.

    The exporter merges equal initializers (fresh instance-norm scales are all ones) and reaches
    them through Identity nodes; the FP16 converter then casts those to half and feeds them to the
    FP32 instance norm, which ONNX Runtime refuses to load.
    """
    inits = {init.name for init in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.input[0] in inits}
    graph_outputs = {o.name for o in model.graph.output}
    keep = [n for n in model.graph.node if not (n.output and n.output[0] in alias
                                                and n.output[0] not in graph_outputs)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias and name not in graph_outputs:
                node.input[i] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def to_fp16(src: Path, dst: Path, io_fp16: bool = False) -> Path:
    """Writes an FP16 graph with FP32 instance norm; I/O FP32 unless io_fp16."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    import onnx

    model = onnx.load(str(src))
    _inline_initializer_identities(model)
    half = convert_float_to_float16(model, keep_io_types=not io_fp16, op_block_list=list(FP32_OPS))
    with atomic_path(dst) as tmp:
        onnx.save(half, str(tmp))
    return dst


QUANTIZED_OPS = ("Conv", "ConvTranspose")  # what the Q/DQ recipe quantizes (their inputs)


def layer_name(node: onnx.NodeProto) -> str:
    """The PyTorch module a Conv node was exported from, e.g. `/net/down_path_1.1/conv_1/Conv` ->
    `down_path_1.1.conv_1` (the state dict's key without `net.` and `.weight`)."""
    scope = node.name.strip("/").split("/")[:-1]
    if scope and scope[0] == "net":
        scope = scope[1:]
    return ".".join(scope) or node.name


def float_nodes(model: onnx.ModelProto, layers) -> list[str]:
    """Names of the Conv/ConvTranspose nodes inside the given modules (`sam12` is its three convs,
    `down_path_1.1.conv_1` one); a name that matches no convolution is refused."""
    convs = [(node.name, layer_name(node)) for node in model.graph.node
             if node.op_type in QUANTIZED_OPS]
    unmatched = [layer for layer in layers
                 if not any(m == layer or m.startswith(layer + ".") for _, m in convs)]
    if unmatched:
        raise HinetDeployError(f"--float-layers: {', '.join(unmatched)} name(s) no convolution of "
                               f"the graph (modules look like {convs[1][1] if len(convs) > 1 else 'conv_01'}"
                               f"; `hinet-deploy sensitivity` lists them all)")
    return [name for name, module in convs
            if any(module == layer or module.startswith(layer + ".") for layer in layers)]


# onnxruntime's quantizer logs this (through the root logger, twice per build) for every model it
# has not pre-processed; the graphs here come straight from a verified export, so it says nothing.
PREPROCESS_ADVICE = "pre-processing before quantization"  # both wordings onnxruntime has used


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _without_log_line(text: str):
    """The root logger's records containing `text` dropped, for the block's duration only."""
    dropped = _DropMessage(text)
    root = logging.getLogger()
    root.addFilter(dropped)
    try:
        yield
    finally:
        root.removeFilter(dropped)


def to_int8(src: Path, dst: Path, reader, *, method: str = DEFAULT_CALIBRATION,
            float_layers=DEFAULT_FLOAT_LAYERS, cache_path: Path | None = None) -> dict:
    """Writes a Q/DQ graph; returns what was done (method, float nodes, whether the cache hit).

    Every convolution is quantized, then `float_layers` are switched back to float
    (`FloatSwitches`): their input is read from before its QuantizeLinear even where that
    activation is shared with an INT8 convolution (onnxruntime's `nodes_to_exclude` would leave the
    shared quantized activation in). `reader` is an onnxruntime.quantization.CalibrationDataReader;
    it is not called when `cache_path` already holds the ranges.
    """
    import onnx

    fp32 = onnx.load(str(src))
    excluded = float_nodes(fp32, float_layers)
    cache_hit = cache_path is not None and Path(cache_path).is_file()
    with tempfile.TemporaryDirectory(prefix="hinet-int8-") as tmp:
        all_int8 = Path(tmp) / "all-int8.onnx"
        _quantize(src, all_int8, reader, method, cache_path, cache_hit)
        switches = FloatSwitches(onnx.load(str(all_int8)), fp32)
    names = {node.name: layer for layer, node in switches.nodes.items()}
    with switches.floated([names[n] for n in excluded if n in names]) as model:
        with atomic_path(dst) as out:
            onnx.save(_without_dead_nodes(model), str(out))
    cache = str(Path(cache_path).resolve()) if cache_path else ""
    return {"method": method, "float_nodes": excluded, "calibration_cache": cache,
            "calibration_cache_hit": cache_hit}


def _quantize(src: Path, dst: Path, reader, method: str, cache_path, cache_hit: bool) -> None:
    """onnxruntime's static quantizer with the recipe of the module docstring, every conv INT8."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise HinetDeployError(f"unknown calibration method {method!r}; choose one of "
                               f"{', '.join(CALIBRATION_METHODS)}")
    calib_method = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                    "minmax": CalibrationMethod.MinMax}[method]
    # One crop per collection stride: the histogram calibrators otherwise hold every intermediate
    # tensor of every crop at once (about 1 GB per 256x256 crop for the gopro variant, so 33 GB for
    # 32 crops); in strides they merge histograms as they go.
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "CalibPercentile": PERCENTILE, "CalibStridedMinMax": CALIBRATION_STRIDE}
    if cache_path is not None:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
    # onnxruntime prints its calibration steps ("Collecting tensor data ...") on stdout, which is
    # for results; the reader's progress bar says how far calibration is.
    with contextlib.redirect_stdout(io.StringIO()), _without_log_line(PREPROCESS_ADVICE):
        quantize_static(str(src), str(dst), None if cache_hit else reader,
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=calib_method,
                        extra_options=extra,
                        calibration_cache_path=str(cache_path) if cache_path else None)


def _without_dead_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the Q/DQ nodes and weights that only float layers used."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.cleanup()
    pruned = gs.export_onnx(graph)
    pruned.metadata_props.extend(model.metadata_props)  # graph facts (export.metadata); gs drops them
    pruned.ir_version = model.ir_version
    return pruned


class FloatSwitches:
    """The convolutions of a calibrated Q/DQ graph, each switchable back to float in place.

    A layer in float reads its activation from before the QuantizeLinear and the FP32 graph's
    weights, and the ops after it that are not INT8 convolutions read its output as it was made
    (onnxruntime's recipe also quantizes a quantized conv's output for whatever follows). That is
    what onnxruntime's `nodes_to_exclude` makes of a layer where no INT8 conv shares its input or
    output (where one does, onnxruntime leaves the shared quantized tensor in the float layer's
    path). Trying a layer needs no new calibration, and `to_int8` writes float layers the same way,
    so a sensitivity measured on the switched graph is the one of the graph a build writes.
    """

    def __init__(self, qdq: onnx.ModelProto, fp32: onnx.ModelProto):
        self.model = qdq
        producers = {out: node for node in qdq.graph.node for out in node.output}
        readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in qdq.graph.node:
            for index, name in enumerate(node.input):
                readers.setdefault(name, []).append((node, index))
        fp32_weights = _conv_weights(fp32)
        self.nodes: dict[str, onnx.NodeProto] = {}
        self._float: dict[str, tuple[str, onnx.TensorProto]] = {}
        self._output_readers: dict[str, tuple[str, list]] = {}
        for node in qdq.graph.node:
            source = _before_qdq(producers, node.input[0]) if node.op_type in QUANTIZED_OPS \
                else None
            if source is None or node.name not in fp32_weights:
                continue  # already float (or not from this recipe): nothing to switch
            layer = layer_name(node)
            self.nodes[layer] = node
            self._float[layer] = (source, fp32_weights[node.name])
            self._output_readers[layer] = (node.output[0], _after_qdq(readers, node.output[0]))

    @property
    def layers(self) -> list[str]:
        """The switchable layers, in graph order."""
        return list(self.nodes)

    @contextlib.contextmanager
    def floated(self, layers):
        """The Q/DQ graph with `layers` in float for the block's duration, then as it was."""
        unknown = [layer for layer in layers if layer not in self.nodes]
        if unknown:
            raise HinetDeployError(f"not an INT8 convolution of this graph: {', '.join(unknown)}")
        int8_convs = {id(node) for layer, node in self.nodes.items() if layer not in layers}
        inits = self.model.graph.initializer
        existing = {init.name for init in inits}
        edits, added = [], []  # (node, input index, old name); weights appended
        try:
            for layer in layers:
                source, weight = self._float[layer]
                node = self.nodes[layer]
                edits += [(node, 0, node.input[0]), (node, 1, node.input[1])]
                node.input[0], node.input[1] = source, weight.name
                if weight.name not in existing:
                    inits.append(weight)
                    existing.add(weight.name)
                    added.append(weight.name)
                raw, readers = self._output_readers[layer]
                for reader, index in readers:
                    if id(reader) not in int8_convs:
                        edits.append((reader, index, reader.input[index]))
                        reader.input[index] = raw
            yield self.model
        finally:
            for node, index, name in reversed(edits):
                node.input[index] = name
            if added:  # appended last, so removed from the end without copying the others
                del inits[len(inits) - len(added):]


def _before_qdq(producers: dict, name: str) -> str | None:
    """The tensor a QuantizeLinear -> DequantizeLinear pair made `name` from, or None."""
    dequantize = producers.get(name)
    if dequantize is None or dequantize.op_type != "DequantizeLinear":
        return None
    quantize = producers.get(dequantize.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return None
    return quantize.input[0]


def _after_qdq(readers: dict, name: str) -> list:
    """(node, input index) of every reader of `name` through a QuantizeLinear -> DequantizeLinear."""
    found = []
    for quantize, _ in readers.get(name, []):
        if quantize.op_type != "QuantizeLinear":
            continue
        for dequantize, _ in readers.get(quantize.output[0], []):
            if dequantize.op_type == "DequantizeLinear":
                found += readers.get(dequantize.output[0], [])
    return found


def _conv_weights(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Each Conv/ConvTranspose node's weight initializer (through the exporter's Identity nodes)."""
    inits = {init.name: init for init in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}
    weights = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            name = alias.get(node.input[1], node.input[1])
            if name in inits:
                weights[node.name] = inits[name]
    return weights
