"""Which TensorRT is installed: full `tensorrt` (10.x/11.x, Jetson, data centre) or `tensorrt_rtx`.

Both have the same Python API for what we use. Both are imported only when an engine is built or run.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from hinet_deploy.errors import HinetDeployError

BACKENDS = ("tensorrt", "tensorrt_rtx")
INSTALL = {"tensorrt": "pip install tensorrt (NVIDIA's index) or JetPack's python3-libnvinfer",
           "tensorrt_rtx": "pip install tensorrt-rtx"}


@dataclass
class TrtBackend:
    name: str
    module: object
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def network_flags(self) -> int:
        """Strongly typed on every backend: precision comes from the graph (FINDINGS.md).

        TensorRT-RTX and TensorRT 11 are strongly typed only; TensorRT 10 needs the flag; earlier
        versions have no strongly typed mode and are refused.
        """
        trt = self.module
        if self.name == "tensorrt" and self.major < 10:
            raise HinetDeployError(f"TensorRT {self.version} has no strongly typed networks; "
                                   f"TensorRT 10 or later is needed")
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return 1 << int(flag) if flag is not None else 0


def load_backend(name: str | None = None) -> TrtBackend:
    """The named backend, or the first importable of tensorrt, tensorrt_rtx."""
    if name is not None and name not in BACKENDS:
        raise HinetDeployError(f"unknown backend {name!r}; choose {' or '.join(BACKENDS)}")
    errors = []
    for candidate in [name] if name else BACKENDS:
        try:
            module = importlib.import_module(candidate)
        except (ImportError, OSError) as exc:  # OSError: bindings present, libraries missing
            errors.append(f"{candidate}: {exc}")
            continue
        return TrtBackend(candidate, module, module.__version__)
    wanted = name or "tensorrt or tensorrt_rtx"
    how = INSTALL[name] if name else f"{INSTALL['tensorrt_rtx']} (or {INSTALL['tensorrt']})"
    raise HinetDeployError(f"building engines needs {wanted}, which cannot be imported here "
                           f"({'; '.join(errors)}); install it with: {how}")
