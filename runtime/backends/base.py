"""The contract every backend keeps, and what each states about itself beside running."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hinet_deploy.common.errors import HinetDeployError, first_line
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


def non_finite_count(out) -> int:
    """How many values of a numpy array or torch tensor are NaN or infinite."""
    if isinstance(out, np.ndarray):
        return int(out.size - np.count_nonzero(np.isfinite(out)))
    import torch

    return int(out.numel() - torch.isfinite(out).sum().item())


def _shape(batch) -> str:
    return "x".join(str(int(d)) for d in getattr(batch, "shape", ()))


def option(default, help: str, *, cli: bool = True, threads: bool = False, tiled=None):
    """A field of a backend's options (vs-mlrt's option dataclasses): its default and help; `cli`:
    `restore` offers it as --NAME; `threads`: it holds the backend to N CPU threads (a Ray worker's
    share); `tiled`: its value where the Restorer runs tiles and the caller did not set it."""
    meta = {"help": help, "cli": cli, "threads": threads}
    if tiled is not None:
        meta["tiled"] = tiled
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    """A backend that takes no options."""


@dataclass(frozen=True)
class ModelFiles:
    """What the checks have of one model: the checkpoint, its graph per precision, its engines
    per precision and the models built for one backend alone (OpenVINO's INT8 IR). Each backend says which of them it runs here (BackendBase.check_runs)."""

    checkpoint: Path
    graphs: dict = field(default_factory=dict)  # precision -> ONNX graph
    engines: dict = field(default_factory=dict)  # precision -> engine
    built: dict = field(default_factory=dict)  # `backend:precision` -> a backend's own model


class BackendBase:
    """The facts a backend module owns, so that no caller re-derives them from a file suffix:
    its one name (CLI, JSON, reports), the model files it opens, the extra that installs it, the
    options it sets when the Restorer tiles, how a worker gives it its CPU share, and which files
    it needs on another machine. Subclasses take `path` and their own options in __init__.

    The template (Polygraphy's infer -> infer_impl): `run`, `run_device` and `close` are this
    class's alone. `run` refuses use after close, checks the batch against `limits`, calls
    `run_impl`, refuses a non-finite output (NaN or inf is a broken model or input, never an
    image) and turns any foreign error into one HinetDeployError naming the backend, the file and
    the batch's shape. Subclasses implement `run_impl`, `close_impl` and, where they take tensors
    on a GPU, `run_device_impl`."""

    name: str = ""
    suffixes: tuple[str, ...] = ()
    extra: str = ""  # the extra that brings what it needs (common.lazy.EXTRA_OF)
    requires: tuple[str, ...] = ()  # the modules it imports, for the optional-dependency table
    Options: type = NoOptions  # a frozen dataclass of option() fields: its __init__'s keywords

    @classmethod
    def option_fields(cls) -> tuple:
        return dataclasses.fields(cls.Options)

    @classmethod
    def options(cls) -> list[str]:
        """The keyword options it takes: its Options' fields."""
        return [f.name for f in cls.option_fields()]

    @classmethod
    def make_options(cls, **given):
        """Its Options from keywords; one that it does not take is one line naming those it does."""
        unknown = sorted(set(given) - set(cls.options()))
        if unknown:
            raise HinetDeployError(f"{cls.name} ({', '.join(cls.suffixes)} files) does not take "
                                   f"{', '.join(unknown)}; it takes "
                                   f"{', '.join(cls.options()) or 'no options'}")
        return cls.Options(**given)

    @classmethod
    def tiled_defaults(cls) -> dict:
        """Options for tiled modes, where the caller did not set them."""
        return {f.name: f.metadata["tiled"] for f in cls.option_fields() if "tiled" in f.metadata}

    @classmethod
    def worker_options(cls, threads: int) -> dict:
        """Options that hold it to `threads` CPU threads (a Ray worker's share)."""
        return {f.name: threads for f in cls.option_fields() if f.metadata.get("threads")}

    @classmethod
    def check_runs(cls, models: ModelFiles) -> list[tuple[str, Path, tuple]]:
        """(precision, model file, options as (name, value) pairs) for each way this backend runs
        the model here: the contenders of validate, bench and fidelity come from these, backend
        by backend (checks.contenders), so a new backend is compared without another edit."""
        return []

    @classmethod
    def precisions(cls, models: ModelFiles) -> list[str]:
        """The precisions it runs here for these model files (what check_runs lists)."""
        return [precision for precision, _, _ in cls.check_runs(models)]

    @classmethod
    def model_files(cls, path: Path) -> list[Path]:
        """The files that make up the model at `path`, to ship to another machine (all in one
        folder there, under their own names)."""
        return [Path(path)]


    path: Path | None = None  # the model file, named in errors
    limits: SizeLimits
    closed: bool = False

    def run_impl(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_device_impl(self, batch):
        raise NotImplementedError

    def close_impl(self) -> None:
        pass

    @property
    def runs_on_device(self) -> bool:
        """Whether it takes torch tensors on a GPU itself (run_device) rather than host arrays."""
        return type(self).run_device_impl is not BackendBase.run_device_impl

    def _what(self, batch) -> str:
        where = f" {Path(self.path).name}" if self.path is not None else ""
        return f"{self.name}{where} on a batch of {_shape(batch)}"

    def _check_batch(self, batch) -> None:
        if self.closed:
            raise HinetDeployError(f"the {self.name} backend{'' if self.path is None else ' of '}"
                                   f"{'' if self.path is None else Path(self.path).name} was "
                                   f"closed: open the model again")
        shape = tuple(getattr(batch, "shape", ()))
        if len(shape) != 4 or shape[1] != 3:
            raise HinetDeployError(f"{self._what(batch)}: a batch is N x 3 x H x W")
        multiple = self.limits.multiple
        if shape[2] % multiple or shape[3] % multiple:
            raise HinetDeployError(f"{self._what(batch)}: H and W must be multiples of {multiple}")
        fixed, largest = self.limits.fixed_hw, self.limits.max_hw
        if fixed is not None and tuple(shape[2:]) != tuple(fixed):
            raise HinetDeployError(f"{self._what(batch)}: the model takes {fixed[0]}x{fixed[1]} "
                                   f"only")
        if largest is not None and (shape[2] > largest[0] or shape[3] > largest[1]):
            raise HinetDeployError(f"{self._what(batch)}: the model's profile ends at "
                                   f"{largest[0]}x{largest[1]}")

    def _guarded(self, call, batch):
        self._check_batch(batch)
        try:
            out = call(batch)
        except HinetDeployError:
            raise
        except Exception as exc:  # the framework's own types: one line naming what failed
            raise HinetDeployError(f"{self._what(batch)} failed: {first_line(exc)}") from exc
        bad = non_finite_count(out)
        if bad:
            raise HinetDeployError(f"{self._what(batch)} returned {bad} values that are NaN or "
                                   f"infinite: the model (its weights) or the input is broken; "
                                   f"nothing was written from it")
        return out

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W float32 in [0, 1] -> the restored batch, same shape, float32."""
        if not isinstance(batch, np.ndarray) or batch.dtype.kind != "f":
            raise HinetDeployError(f"{self._what(batch)}: a batch is a numpy float32 array, not "
                                   f"{type(batch).__name__} of {getattr(batch, 'dtype', '?')}")
        return self._guarded(self.run_impl, batch)

    def run_device(self, batch):
        """A torch tensor on the backend's GPU in, float32 on the same device out."""
        if not self.runs_on_device:
            raise HinetDeployError(f"the {self.name} backend takes host (numpy) batches only")
        return self._guarded(self.run_device_impl, batch)

    def close(self) -> None:
        """Releases what the backend holds; using it afterwards is an error that says so."""
        if not self.closed:
            self.closed = True
            self.close_impl()

