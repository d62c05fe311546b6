"""The fused HIN op, as the graph rewrite writes it and the TensorRT plugin registers it: one place.

The ONNX node is `HalfInstanceNormLeakyReLU` in domain `hinet_deploy`; TensorRT finds the plugin
creator by that name, its namespace and its version. TensorRT 10.10+ reads the namespace from the
node's domain; onnx-tensorrt before 10.10 (JetPack 6 ships TensorRT 10.3) reads it only from a
`plugin_namespace` attribute and the version from `plugin_version` (onnx-tensorrt's
onnxOpImporters.cpp fallback importer; TensorRT CHANGELOG 10.10), so the node carries both.
"""
PLUGIN_OP = "HalfInstanceNormLeakyReLU"
PLUGIN_DOMAIN = "hinet_deploy"  # also the TensorRT plugin namespace
PLUGIN_VERSION = "1"
# The plugin's float fields, in the order it serialises them. The node's other attributes (the
# namespace and version above) are for the parser; the creator ignores fields it does not list.
PLUGIN_FIELDS = ("epsilon", "negative_slope", "gamma", "beta")
NODE_LOOKUP_ATTRS = {"plugin_namespace": PLUGIN_DOMAIN, "plugin_version": PLUGIN_VERSION}
