"""OpenVINO on the CPU: the same .onnx graphs as ONNX Runtime, at an explicit precision.

`fp32` (the default) is faithful to the graph. `bf16` runs the arithmetic in bfloat16 where the
CPU has native BF16 (AVX-512 BF16, AMX): about twice ONNX Runtime's FP32 speed on such CPUs, at
50-60 dB from the FP32 output (README: performance). OpenVINO picks BF16 by itself on such CPUs
(its INFERENCE_PRECISION_HINT); here it is never chosen silently, and refused where the CPU lacks
it. Compiled models are cached on disk (OpenVINO's CACHE_DIR, in the project's cache folder), so a
second process does not compile again; the graph's dynamic batch, height and width stay dynamic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.files import cache_dir
from hinet_deploy.common.lazy import require
from hinet_deploy.export.metadata import OUTPUT_NAME, PREFIX, graph_limits
from hinet_deploy.runtime.backends.base import BackendBase, option

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # ours -> OpenVINO's INFERENCE_PRECISION_HINT
DEVICE = "CPU"


def native_precisions(core, device: str = DEVICE) -> set[str]:
    """The precisions the device computes natively (its OPTIMIZATION_CAPABILITIES)."""
    return {str(c).lower() for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")}


@dataclass(frozen=True)
class OpenVinoOptions:
    precision: str = option("fp32", "OpenVINO's precision: fp32, or bf16 on CPUs with native BF16")
    threads: int | None = option(None, "CPU threads (default: all)", threads=True)


class OpenVinoBackend(BackendBase):
    name = "openvino"
    suffixes = (".onnx",)
    extra = "openvino"
    requires = ("openvino",)
    Options = OpenVinoOptions

    @classmethod
    def runnable_precisions(cls) -> list[str]:
        """The precisions that run here: none without OpenVINO, bf16 only on CPUs with it."""
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            return []
        import openvino

        return ["fp32"] + (["bf16"] if "bf16" in native_precisions(openvino.Core()) else [])

    @classmethod
    def check_runs(cls, models) -> list:
        graph = models.graphs.get("fp32")  # OpenVINO runs the FP32 graph at its own precision
        if graph is None:
            return []
        return [(precision, graph, (("precision", precision),))
                for precision in cls.runnable_precisions()]

    def __init__(self, path, precision: str = "fp32", threads: int | None = None):
        ov = require("openvino", "running graphs with OpenVINO")
        self.path = Path(path)
        if precision not in PRECISIONS:
            raise HinetDeployError(f"OpenVINO precision {precision!r}: choose "
                                   f"{', '.join(PRECISIONS)}")
        core = ov.Core()
        if precision == "bf16" and "bf16" not in native_precisions(core):
            raise HinetDeployError("this CPU has no native BF16 (OpenVINO lists "
                                   f"{', '.join(sorted(native_precisions(core)))}): use "
                                   "--precision fp32, or a CPU with AVX-512 BF16 or AMX")
        self.precision = precision
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision],
                  "CACHE_DIR": str(cache_dir() / "openvino")}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(model, DEVICE, config)
        except Exception as exc:  # OpenVINO raises RuntimeError for bad files
            raise HinetDeployError(f"OpenVINO cannot load {self.path}: {first_line(exc)}") from exc
        info = model.get_rt_info()  # the ONNX graph's metadata_props, under "framework"
        framework = info["framework"] if "framework" in list(info.keys()) else {}
        meta = {k[len(PREFIX):]: framework[k].astype(str) for k in framework
                if k.startswith(PREFIX)}
        shape = model.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        self.limits = graph_limits(meta, dims)
        outputs = [o for o in self.compiled.outputs if OUTPUT_NAME in o.get_names()]
        self.output = outputs[0] if outputs else self.compiled.outputs[0]
        self.request = self.compiled.create_infer_request()

    def run_impl(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(result[self.output], dtype=np.float32)

    def close_impl(self) -> None:
        self.request = self.compiled = None
