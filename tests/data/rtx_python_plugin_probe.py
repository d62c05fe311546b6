"""Probe: can TensorRT-RTX's ONNX parser host this project's Python HIN plugin? Exits 0 if a graph with
one plugin node parses and builds. TensorRT-RTX 1.7.1 from its wheel aborts instead (std::terminate
inside libtensorrt_onnxparser_rtx: it dlopen()s libtensorrt_rtx.so, which the wheel lacks) unless
that name is found on LD_LIBRARY_PATH at process start (hinet_deploy.engines.plugin.rtx_parser).

    python rtx_python_plugin_probe.py GRAPH.onnx CHANNELS
"""
import sys

import tensorrt_rtx as trt

from hinet_deploy.engines.plugin.hin_plugin import register  # noqa: E402

register(trt)
logger = trt.Logger(trt.Logger.ERROR)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
if not parser.parse_from_file(sys.argv[1]):
    sys.exit(f"parse failed: {[str(parser.get_error(i)) for i in range(parser.num_errors)]}")
config = builder.create_builder_config()
profile = builder.create_optimization_profile()
channels = int(sys.argv[2])
profile.set_shape("input", *[(1, channels, s, s) for s in (32, 64, 128)])
config.add_optimization_profile(profile)
sys.exit(0 if builder.build_serialized_network(network, config) is not None else "build failed")
