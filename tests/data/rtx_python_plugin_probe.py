"""Probe: can TensorRT-RTX's ONNX parser host a Python IPluginV3 plugin? Exits 0 if a network with one
plugin node parses and builds; TensorRT-RTX 1.7.1 aborts instead (std::terminate inside
libtensorrt_onnxparser_rtx right after create_plugin returns, before any plugin method is called).

    python rtx_python_plugin_probe.py GRAPH.onnx CHANNELS
"""
import sys

import numpy as np
import tensorrt_rtx as trt

NAME, NAMESPACE = "HalfInstanceNormLeakyReLU", "hinet_deploy"
alive = []  # the registry and parser hold raw pointers: keep every Python object referenced


class ProbePlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                  trt.IPluginV3OneRuntime):
    def __init__(self):
        for base in (trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                     trt.IPluginV3OneRuntime):
            base.__init__(self)
        self.num_outputs, self.plugin_name = 1, NAME
        self.plugin_namespace, self.plugin_version = NAMESPACE, "1"

    def get_capability_interface(self, kind):
        return self

    def clone(self):
        twin = ProbePlugin()
        alive.append(twin)
        return twin

    def get_output_data_types(self, input_types):
        return [input_types[0]]

    def get_output_shapes(self, inputs, shape_inputs, expr_builder):
        return [trt.DimsExprs(inputs[0])]

    def supports_format_combination(self, pos, in_out, num_inputs):
        return in_out[pos].desc.type == trt.DataType.FLOAT

    def configure_plugin(self, inputs, outputs):
        pass

    def get_workspace_size(self, inputs, outputs):
        return 0

    def get_valid_tactics(self):
        return []

    def on_shape_change(self, inputs, outputs):
        pass

    def attach_to_context(self, context):
        return self.clone()

    def get_fields_to_serialize(self):
        return trt.PluginFieldCollection([])

    def enqueue(self, *args):
        raise RuntimeError("the probe never runs")


class ProbeCreator(trt.IPluginCreatorV3One):
    def __init__(self):
        trt.IPluginCreatorV3One.__init__(self)
        self.name, self.plugin_namespace, self.plugin_version = NAME, NAMESPACE, "1"
        self.field_names = trt.PluginFieldCollection([])

    def create_plugin(self, name, fields, phase):
        plugin = ProbePlugin()
        alive.append(plugin)
        return plugin


logger = trt.Logger(trt.Logger.ERROR)
creator = ProbeCreator()
trt.get_plugin_registry().register_creator(creator, NAMESPACE)
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
