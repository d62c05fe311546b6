"""Loading the HINet checkpoints users actually have, safely, with errors that name the problem.

Accepted: BasicSR files ({'params': sd}, {'params_ema': sd}, both), a bare state dict, a few common
wrappers ('state_dict', 'model', 'net'), and `module.`-prefixed keys from DataParallel training.
A .pth is a pickle: it is read with torch.load(weights_only=True), so a file that needs arbitrary code
to unpickle is refused rather than run.
"""
from __future__ import annotations

import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from hinet_deploy.export.model import HINet, HINetConfig
from hinet_deploy.export.variants import OFFICIAL_VARIANTS, infer_config, match_official
from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.untrusted import check_archive
from hinet_deploy.common.files import atomic_path, input_file

# BasicSR keeps the EMA weights, when it trains with them, beside the plain ones: they are the
# better model, as spandrel and BasicSR's own inference scripts assume.
PARAM_KEYS = ("params_ema", "params", "state_dict", "model", "net")
# Modules whose globals a weights-only checkpoint legitimately names (tensor rebuilders, storages,
# OrderedDict); anything else in a pickle torch refused is code it would have run.
_WEIGHT_MODULES = ("torch", "collections", "numpy", "_codecs")
_LISTED = 3  # key names quoted in an error before "and N more"


@dataclass
class LoadedModel:
    """A HINet ready to run, and what callers must respect about it."""

    net: HINet
    config: HINetConfig
    official_names: list[str]  # official variants with this architecture; empty for custom widths
    param_key: str | None  # which entry of the file held the weights; None for a bare state dict
    path: Path | None  # None for a randomly initialised network (MAC counts, tests)

    @property
    def size_multiple(self) -> int:
        return self.config.size_multiple

    @property
    def official_tiling(self) -> str:
        """'grids' where the published metrics were measured on 256 crops, else 'whole'."""
        tilings = {OFFICIAL_VARIANTS[n].official_tiling for n in self.official_names}
        return tilings.pop() if len(tilings) == 1 else "whole"

    def describe(self) -> str:
        name = "/".join(self.official_names) or "custom"
        c = self.config
        return (f"HINet {name} (wf={c.wf}, depth={c.depth}, HIN levels "
                f"{c.hin_position_left}-{c.hin_position_right}, "
                f"{sum(p.numel() for p in self.net.parameters()) / 1e6:.2f} M parameters)")


def _pickles(path: Path) -> list[bytes]:
    """The pickle streams of a checkpoint: data.pkl of torch's zip format, or the whole file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")]
    return [path.read_bytes()]


def unsafe_globals(path: Path) -> list[str]:
    """The module.name of every global a checkpoint's pickle would import outside the modules of
    plain weights (GLOBAL and STACK_GLOBAL opcodes), read without unpickling anything."""
    found = []
    for data in _pickles(path):
        strings: list[str] = []
        try:
            for opcode, arg, _ in pickletools.genops(data):
                if opcode.name == "GLOBAL":
                    found.append(arg.replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                if isinstance(arg, str):
                    strings.append(arg)
        except (ValueError, EOFError):  # a truncated or foreign stream: what was read counts
            pass
    return sorted({g for g in found if g.split(".")[0] not in _WEIGHT_MODULES})


def _read_file(path: Path):
    input_file(path, "checkpoint")
    check_archive(path)  # before torch unpacks anything
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Which global made torch refuse is read from the pickle itself, not from torch's message,
        # whose wording changes between versions ("Unsupported global", "... is blocked").
        unsafe = unsafe_globals(path)
        if not unsafe:  # not a pickle at all: "Unsupported operand", bad opcodes
            raise HinetDeployError(f"cannot read {path}: not a PyTorch checkpoint, or corrupt") from exc
        raise HinetDeployError(
            f"refused to load {path}: unpickling it would run {', '.join(unsafe)}, and running the "
            f"code a pickle names is unsafe. Re-save its state dict (torch.save(model.state_dict()))"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = first_line(exc)
        raise HinetDeployError(
            f"cannot read {path}: not a PyTorch checkpoint, or truncated/corrupt ({first})") from exc


def _unwrap(obj, path: Path) -> tuple[dict, str | None]:
    if not isinstance(obj, dict):
        raise HinetDeployError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for key in PARAM_KEYS:
        if isinstance(obj.get(key), dict):
            return obj[key], key
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise HinetDeployError(f"{path} has no weights: expected one of {', '.join(PARAM_KEYS)} or a "
                           f"bare state dict; it holds {_summarise(sorted(map(str, obj)))}")


def _summarise(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _clean_state_dict(state: dict, path: Path) -> dict:
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise HinetDeployError(f"{path}: entries that are not tensors: {_summarise(bad)}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    broken = [f"{k} ({int((~torch.isfinite(v)).sum())} of {v.numel()})" for k, v in state.items()
              if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # a network with NaN or inf weights outputs black or white frames, never an image
        raise HinetDeployError(f"{path} holds weights that are NaN or infinite: "
                               f"{_summarise(broken)}; the checkpoint is broken (a diverged "
                               f"training run or a damaged file)")
    return state


def check_compatible(state: dict, net: HINet, path: Path, what: str) -> None:
    """Raises with the missing, unexpected and mis-shaped keys summarised, if any."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_summarise(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_summarise(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (file vs model: {_summarise(shapes)})")
    if problems:
        raise HinetDeployError(f"{path} does not fit {what}: " + "; ".join(problems))


def config_for(state: dict, path: Path, variant: str | None) -> HINetConfig:
    if variant is not None:
        if variant not in OFFICIAL_VARIANTS:
            raise HinetDeployError(f"unknown variant {variant!r}; known: {', '.join(OFFICIAL_VARIANTS)}")
        return OFFICIAL_VARIANTS[variant].config
    try:
        return infer_config(state)
    except (KeyError, ValueError, IndexError) as exc:
        raise HinetDeployError(
            f"{path} is not a HINet checkpoint ({exc}); its keys: {_summarise(list(state))}. "
            f"If it is one, name the architecture with --variant") from exc


def load_checkpoint(path, variant: str | None = None) -> LoadedModel:
    """Reads, recognises and strictly loads a HINet checkpoint; the network comes back in eval mode."""
    path = Path(path)
    state, key = _unwrap(_read_file(path), path)
    state = _clean_state_dict(state, path)
    config = config_for(state, path, variant)
    net = HINet(config)
    what = f"variant {variant}" if variant else f"the HINet its keys describe (wf={config.wf})"
    check_compatible(state, net, path, what)
    net.load_state_dict(state, strict=True)
    return LoadedModel(net.eval(), config, match_official(config), key, path)


def random_model(variant: str, seed: int = 0) -> LoadedModel:
    """An official architecture with random weights: for counting MACs and for tests."""
    if variant not in OFFICIAL_VARIANTS:
        raise HinetDeployError(f"unknown variant {variant!r}; known: {', '.join(OFFICIAL_VARIANTS)}")
    torch.manual_seed(seed)
    config = OFFICIAL_VARIANTS[variant].config
    return LoadedModel(HINet(config).eval(), config, match_official(config), None, None)


def save_basicsr(state_dict: dict, path: Path) -> None:
    """Writes {'params': state_dict}, the format of the official HINet releases, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"params": state_dict}, tmp)
