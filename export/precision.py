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
import logging
import io
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
# the stage-1 image and the sigmoid gate (inputs or outputs are images). Measured on the demo model
# (README): 43.4 dB to the FP32 output with them in float, 42.8 dB with everything INT8, the same
# denoising gain; they are 6 of 93 convs and cost little. `--float-layers` with no names turns it off.
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


def float_nodes(model: onnx.ModelProto, layers) -> list[str]:
    """Names of the Conv/ConvTranspose nodes that belong to the given module prefixes."""
    wanted = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        scope = node.name.strip("/").split("/")  # e.g. /net/sam12/conv1/Conv
        if scope and scope[0] == "net":
            scope = scope[1:]
        if any(scope[:len(layer.split("."))] == layer.split(".") for layer in layers):
            wanted.append(node.name)
    return wanted


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
    """Writes a Q/DQ graph; returns what was done (method, excluded nodes, whether the cache hit).

    `reader` is an onnxruntime.quantization.CalibrationDataReader; it is not called when
    `cache_path` already holds the ranges.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise HinetDeployError(f"unknown calibration method {method!r}; choose one of "
                               f"{', '.join(CALIBRATION_METHODS)}")
    import onnx

    model = onnx.load(str(src))
    excluded = float_nodes(model, float_layers)
    cache_hit = cache_path is not None and Path(cache_path).is_file()
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
    with atomic_path(dst) as tmp, contextlib.redirect_stdout(io.StringIO()), \
            _without_log_line(PREPROCESS_ADVICE):
        quantize_static(str(src), str(tmp), None if cache_hit else reader,
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "ConvTranspose"],
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        calibrate_method=calib_method, extra_options=extra,
                        calibration_cache_path=str(cache_path) if cache_path else None)
    cache = str(Path(cache_path).resolve()) if cache_path else ""
    return {"method": method, "float_nodes": excluded, "calibration_cache": cache,
            "calibration_cache_hit": cache_hit}
