"""What the checks compare: one list of contenders, each a backend (by its one name), a precision
and the model file it runs, with PyTorch FP32 on the checkpoint as the baseline of all of them.

The list is data: every row of the backend table says what it runs here (`check_runs`), so this
module names no backend class and a new backend is compared by validate, bench and fidelity with
no edit here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hinet_deploy.build.flow import PRECISIONS, GraphRequest, backend_models, precision_graphs
from hinet_deploy.runtime.backends import BACKENDS, ModelFiles

# The reference every check measures against: the checkpoint in PyTorch, FP32.
BASELINE = ("pytorch", "fp32")


@dataclass(frozen=True)
class Contender:
    backend: str
    precision: str
    model: Path
    options: tuple = ()  # (name, value) pairs the backend is opened with

    @property
    def key(self) -> tuple[str, str]:
        return self.backend, self.precision

    @property
    def name(self) -> str:
        """`backend:precision`, e.g. `openvino:bf16`."""
        return f"{self.backend}:{self.precision}"


def contenders(ckpt: Path, req: GraphRequest, engines=(), precisions=PRECISIONS) -> list[Contender]:
    """The baseline first, then what each backend of the table runs here, in the table's order:
    the graphs of `precisions`, each engine built for the checks (engines: [(precision, engine
    path)]), and the models built for one backend alone where INT8 is among `precisions`
    (OpenVINO INT8)."""
    built = backend_models(req) if "int8" in precisions else {}
    models = ModelFiles(Path(ckpt), dict(precision_graphs(req, precisions)), dict(engines), built)
    found = [Contender(name, precision, model, tuple(options))
             for name, cls in BACKENDS.items()
             for precision, model, options in cls.check_runs(models)]
    return sorted(found, key=lambda c: c.key != BASELINE)  # stable: the table's order after it


def precisions_here(backend: str) -> list[str]:
    """The precisions `backend` runs here on an FP32 graph (OpenVINO: fp32, and bf16 where the CPU
    has it natively; none where it is not installed)."""
    probe = ModelFiles(Path("model.pth"), {"fp32": Path("model.onnx")})
    return BACKENDS[backend].precisions(probe)
