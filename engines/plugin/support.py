"""Whether a TensorRT can host the fused HIN plugin, and what a build or a load does first so that
its parser or runtime finds the plugin's creator."""
from __future__ import annotations

from hinet_deploy.engines.tensorrt_module import TensorRtModule


def plugin_support(trt_module: TensorRtModule) -> str | None:
    """None where the TensorRT can host the fused HIN plugin, else why not."""
    if trt_module.name == "tensorrt_rtx":
        # Re-checked by tests/test_engines.py::test_rtx_python_plugin_abort_is_still_there.
        return ("TensorRT-RTX 1.7 cannot host a Python IPluginV3 plugin: its ONNX parser calls "
                "std::terminate right after the plugin is created, even for a minimal plugin")
    return None  # full TensorRT: engines.plugin.hin_plugin (its GPU path has not run yet; README)


def register_plugin(trt_module: TensorRtModule) -> None:
    """Registers the plugin's creator: before parsing (the parser creates the plugin from its node)
    and before deserialising an engine that holds plugin layers."""
    from hinet_deploy.engines.plugin.hin_plugin import register

    register(trt_module.module)
