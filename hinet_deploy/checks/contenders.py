"""What the checks compare: one list of contenders, each a backend (by its one name), a precision
and the model file it runs, with PyTorch FP32 on the checkpoint as the baseline of all of them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hinet_deploy.build.flow import GraphRequest, precision_graphs
from hinet_deploy.runtime.backends import (OnnxRuntimeBackend, OpenVinoBackend, TensorRtBackend,
                                           TorchBackend)

# The reference every check measures against: the checkpoint in PyTorch, FP32.
BASELINE = (TorchBackend.name, "fp32")


@dataclass(frozen=True)
class Contender:
    backend: str
    precision: str
    model: Path
    options: tuple = ()  # (name, value) pairs the backend is opened with

    @property
    def key(self) -> tuple[str, str]:
        return self.backend, self.precision


def contenders(ckpt: Path, req: GraphRequest, engines=()) -> list[Contender]:
    """The baseline, ONNX Runtime on each precision's graph, and each engine built for the checks
    (engines: [(precision, engine path)])."""
    found = [Contender(*BASELINE, Path(ckpt))]
    found += [Contender(OnnxRuntimeBackend.name, precision, graph)
              for precision, graph in precision_graphs(req)]
    found += [Contender(TensorRtBackend.name, precision, engine) for precision, engine in engines]
    fp32 = next(c.model for c in found if c.key == (OnnxRuntimeBackend.name, "fp32"))
    found += [Contender(OpenVinoBackend.name, precision, fp32, (("precision", precision),))
              for precision in openvino_precisions()]
    return found


def openvino_precisions() -> list[str]:
    """OpenVINO's precisions that run here: none without it, bf16 only on CPUs with it."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return []
    import openvino

    from hinet_deploy.runtime.backends.openvino import native_precisions

    return ["fp32"] + (["bf16"] if "bf16" in native_precisions(openvino.Core()) else [])
