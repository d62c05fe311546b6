"""Which TensorRT is installed: full `tensorrt` (10.x/11.x, Jetson, data centre) or `tensorrt_rtx`.

Both have the same Python API for what we use. Both are imported only when an engine is built or run.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import install_hint

MODULES = ("tensorrt", "tensorrt_rtx")
# Full TensorRT comes from NVIDIA's index or JetPack, never from an extra of ours.
INSTALL_TENSORRT = "pip install tensorrt (NVIDIA's index) or JetPack's python3-libnvinfer"


@dataclass
class TensorRtModule:
    name: str
    module: object
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def network_flags(self) -> int:
        """Strongly typed everywhere: precision comes from the graph (TensorRT 11
        removed the FP16/INT8 builder flags; TensorRT-RTX has only strongly typed networks).

        TensorRT-RTX and TensorRT 11 are strongly typed only; TensorRT 10 needs the flag; earlier
        versions have no strongly typed mode and are refused.
        """
        trt = self.module
        if self.name == "tensorrt" and self.major < 10:
            raise HinetDeployError(f"TensorRT {self.version} has no strongly typed networks; "
                                   f"TensorRT 10 or later is needed")
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return 1 << int(flag) if flag is not None else 0


def import_tensorrt(name: str | None = None, purpose: str = "building engines") -> TensorRtModule:
    """The named TensorRT module, or the first importable of tensorrt, tensorrt_rtx. `purpose`
    says in the error what it was needed for."""
    if name is not None and name not in MODULES:
        raise HinetDeployError(f"unknown TensorRT module {name!r}; choose {' or '.join(MODULES)}")
    errors = []
    for candidate in [name] if name else MODULES:
        try:
            module = importlib.import_module(candidate)
        except (ImportError, OSError) as exc:  # OSError: bindings present, libraries missing
            errors.append(f"{candidate}: {exc}")
            continue
        return TensorRtModule(candidate, module, module.__version__)
    wanted = name or "tensorrt or tensorrt_rtx"
    how = {"tensorrt": INSTALL_TENSORRT, "tensorrt_rtx": install_hint("trt")}.get(
        name, f"{install_hint('trt')} (or {INSTALL_TENSORRT})")
    raise HinetDeployError(f"{purpose} needs {wanted}, which cannot be imported here "
                           f"({'; '.join(errors)}); install it with: {how}")


_LOGGERS: dict[str, object] = {}


def collecting_logger(trt):
    """The one logger of this process for a TensorRT module. TensorRT keeps the first logger it is
    given for the whole process ("the current new logger is ignored" for later ones), so builders
    and runtimes share this one; `capture()` collects what it says during a piece of work."""
    if trt.__name__ not in _LOGGERS:
        _LOGGERS[trt.__name__] = _make_logger(trt)
    return _LOGGERS[trt.__name__]


def _make_logger(trt):
    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.windows: list[tuple[list[str], bool]] = []  # (messages, echo) per open capture

        def log(self, severity, msg):
            if severity > trt.ILogger.Severity.WARNING:
                return
            for messages, echo in self.windows:
                messages.append(f"[{severity.name}] {msg}")
                if echo:
                    print(f"[{trt.__name__}] {msg}", file=sys.stderr)

        @contextlib.contextmanager
        def capture(self, echo: bool = False):
            window = ([], echo)
            self.windows.append(window)
            try:
                yield window[0]
            finally:
                self.windows.remove(window)

    return CollectingLogger()
