"""The contract every backend keeps, and what each states about itself beside running."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hinet_deploy.common.limits import SizeLimits


@runtime_checkable
class Backend(Protocol):
    """What the Restorer runs: a path's backend from open_backend, or the caller's own object.
    A backend may also offer `run_device(tensor)` for torch tensors on a GPU."""

    name: str
    limits: SizeLimits

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W float32 in [0, 1] -> the restored batch, same shape, float32."""

    def close(self) -> None:
        """Releases what the backend holds; it is not used afterwards."""


class BackendBase:
    """The facts a backend module owns, so that no caller re-derives them from a file suffix:
    its one name (CLI, JSON, reports), the model files it opens, the extra that installs it, the
    options it sets when the Restorer tiles, how a worker gives it its CPU share, and which files
    it needs on another machine. Subclasses take `path` and their own options in __init__."""

    name: str = ""
    suffixes: tuple[str, ...] = ()
    extra: str = ""  # the extra that brings what it needs (common.lazy.EXTRA_OF)
    threads_option: str | None = None  # the option that sets its CPU threads, if it has one

    @classmethod
    def tiled_defaults(cls) -> dict:
        """Options for tiled modes, where the caller did not set them."""
        return {}

    @classmethod
    def worker_options(cls, threads: int) -> dict:
        """Options that hold it to `threads` CPU threads (a Ray worker's share)."""
        return {cls.threads_option: threads} if cls.threads_option else {}

    @classmethod
    def model_files(cls, path: Path) -> list[Path]:
        """The files that make up the model at `path`, to ship to another machine (all in one
        folder there, under their own names)."""
        return [Path(path)]

    @classmethod
    def options(cls) -> list[str]:
        """The keyword options it takes."""
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, path
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
