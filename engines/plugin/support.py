"""Whether a TensorRT can host the fused HIN plugin, how a build must run so that it can, and what a
build or a load does first so that the parser or runtime finds the plugin's creator."""
from __future__ import annotations

from dataclasses import dataclass, field

from hinet_deploy.engines.tensorrt_module import TensorRtModule


@dataclass(frozen=True)
class PluginHost:
    """reason: why the plugin cannot be hosted (None: it can). workaround: what was done so that it
    can, for the sidecar and the build's output. env: the environment of the child process the
    build must run in (None: in this process)."""

    reason: str | None = None
    workaround: str | None = None
    env: dict[str, str] | None = field(default=None, compare=False)


def plugin_host(trt_module: TensorRtModule) -> PluginHost:
    """How this TensorRT hosts the plugin. Full TensorRT: as it is. TensorRT-RTX 1.7: its parser
    needs a library name the wheel lacks (engines.plugin.rtx_parser)."""
    if trt_module.name != "tensorrt_rtx":
        return PluginHost()
    from hinet_deploy.engines.plugin.rtx_parser import UNVERSIONED, parser_fix

    try:
        fix = parser_fix()
    except OSError as exc:  # no wheel library to link to, or a cache folder that cannot be written
        return PluginHost(reason=f"TensorRT-RTX's ONNX parser aborts on plugin nodes unless it "
                                 f"finds {UNVERSIONED}, and no link to it could be made: {exc}")
    return PluginHost(workaround=fix.how, env=fix.env)


def register_plugin(trt_module: TensorRtModule) -> None:
    """Registers the plugin's creator: before parsing (the parser creates the plugin from its node)
    and before deserialising an engine that holds plugin layers."""
    from hinet_deploy.engines.plugin.hin_plugin import register

    register(trt_module.module)
