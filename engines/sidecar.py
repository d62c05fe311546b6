"""ENGINE.json beside ENGINE: what went into an engine and what running it needs, one schema.

Written by the build and read by the runtime through this module alone. Paths are stored relative
to the sidecar's folder, so an engine folder copied to another machine (a Jetson) still loads and
still names the graph it was built from.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.files import atomic_path
from hinet_deploy.common.limits import HINET_SIZE_MULTIPLE
from hinet_deploy.common.untrusted import checked_fields, confined, read_json
from hinet_deploy.export.metadata import INPUT_NAME, OUTPUT_NAME

SCHEMA = 2  # 1: the unversioned sidecar of hinet-deploy 0.1 (read, converted on the fly)
PATH_FACTS = ("onnx", "hin_graph", "timing_cache", "calibration_cache")  # stored relative


@dataclass(frozen=True)
class EngineSidecar:
    tensorrt: str  # the module that built the engine: "tensorrt" or "tensorrt_rtx"
    tensorrt_version: str
    precision: str
    profile: dict  # {"min": [N, 3, H, W], "opt": [...], "max": [...]}
    inputs: tuple[str, ...] = (INPUT_NAME,)
    outputs: tuple[str, ...] = (OUTPUT_NAME,)
    size_multiple: int = HINET_SIZE_MULTIPLE
    # TensorRT-RTX build targets (named, or its defaults with facts["default_targets"]); () for full
    # TensorRT, which builds for the GPU it builds on.
    compute_capabilities: tuple[str, ...] = ()
    hin_plugin: bool = False  # the engine holds fused HIN plugin layers
    facts: dict = field(default_factory=dict)  # build facts: graph, hashes, calibration, timings
    schema: int = SCHEMA

    def path_fact(self, name: str, engine: Path) -> Path | None:
        """A path fact resolved against the engine's folder (wherever the folder now is), refused
        where it leads out of that folder (common.untrusted)."""
        value = self.facts.get(name)
        if value is None:
            return None
        return confined(Path(engine).parent, value, f"the sidecar of {Path(engine).name} ({name})")

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["inputs"], data["outputs"] = list(self.inputs), list(self.outputs)
        data["compute_capabilities"] = list(self.compute_capabilities)
        return data


def sidecar_path(engine: Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def _relative(facts: dict, folder: Path) -> dict:
    out = dict(facts)
    for name in PATH_FACTS:
        if out.get(name) is not None:
            out[name] = os.path.relpath(Path(out[name]).resolve(), folder.resolve())
    return out


def write_sidecar(engine: Path, sidecar: EngineSidecar) -> Path:
    """Writes ENGINE.json atomically, path facts made relative to its folder."""
    path = sidecar_path(engine)
    data = sidecar.as_dict()
    data["facts"] = _relative(sidecar.facts, path.parent)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def _from_schema_1(data: dict) -> dict:
    known = {"backend", "backend_version", "precision", "profiles", "input", "output",
             "size_multiple", "compute_capabilities", "hin_plugin"}
    return {"tensorrt": data.get("backend"), "tensorrt_version": data.get("backend_version"),
            "precision": data.get("precision"), "profile": (data.get("profiles") or [None])[0],
            "inputs": [data.get("input", INPUT_NAME)], "outputs": [data.get("output", OUTPUT_NAME)],
            "size_multiple": data.get("size_multiple", HINET_SIZE_MULTIPLE),
            "compute_capabilities": data.get("compute_capabilities", []),
            "hin_plugin": bool(data.get("hin_plugin")), "schema": 1,
            "facts": {k: v for k, v in data.items() if k not in known}}


# What each field of a sidecar must be, checked before any is read (a sidecar may come from
# elsewhere with an engine folder).
FIELD_TYPES = {"schema": int, "tensorrt": str, "tensorrt_version": str, "precision": str,
               "profile": dict, "inputs": list, "outputs": list, "size_multiple": int,
               "compute_capabilities": list, "hin_plugin": bool, "facts": dict}
FACT_TYPES = {"onnx": (str, type(None)), "onnx_sha256": (str, type(None)),
              "engine_bytes": (int, type(None)), "hin_graph": (str, type(None)),
              "hin_plugin_version": (str, type(None)), "default_targets": (str, type(None))}


def _check_types(data: dict, path: Path) -> None:
    where = f"sidecar {path}"
    checked_fields(data, FIELD_TYPES, where)
    checked_fields(data.get("facts", {}), FACT_TYPES, f"{where} (facts)")
    profile = data.get("profile")
    for key in ("min", "opt", "max"):
        shape = profile.get(key) if isinstance(profile, dict) else None
        if not (isinstance(shape, list) and len(shape) == 4
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
            raise HinetDeployError(f"{where}: profile {key} is {shape!r:.40}, not four positive "
                                   f"whole numbers N, 3, H, W: rebuild the engine")
    for key in ("inputs", "outputs", "compute_capabilities"):
        if not all(isinstance(v, str) for v in data.get(key, [])):
            raise HinetDeployError(f"{where}: {key} holds something other than names")


def read_sidecar(engine: Path) -> EngineSidecar:
    """The sidecar of ENGINE, checked; one clear error for a missing, unreadable or foreign one."""
    path = sidecar_path(engine)
    if not path.exists():
        raise HinetDeployError(f"engine {engine} has no sidecar {path.name}: rebuild it with "
                               f"hinet-deploy build, which writes both")
    try:
        data = read_json(path, "sidecar")
    except HinetDeployError as exc:
        raise HinetDeployError(f"{exc}: rebuild the engine") from None
    if not isinstance(data, dict):
        raise HinetDeployError(f"sidecar {path} does not hold an object: rebuild the engine")
    if "schema" not in data:
        try:
            data = _from_schema_1(data)
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise HinetDeployError(f"sidecar {path} (schema 1) is malformed ({type(exc).__name__}:"
                                   f" {first_line(exc)}): rebuild the engine") from None
    _check_types(data, path)
    if data["schema"] > SCHEMA:
        raise HinetDeployError(f"sidecar {path} has schema {data['schema']}; this hinet-deploy "
                               f"reads up to {SCHEMA}: upgrade hinet-deploy")
    try:
        sidecar = EngineSidecar(**{**data, "inputs": tuple(data["inputs"]),
                                   "outputs": tuple(data["outputs"]),
                                   "compute_capabilities": tuple(data["compute_capabilities"])})
        if not (sidecar.tensorrt and sidecar.tensorrt_version and sidecar.profile["max"]):
            raise KeyError("tensorrt, tensorrt_version or profile")
    except (KeyError, TypeError) as exc:
        raise HinetDeployError(f"sidecar {path} lacks or garbles {exc}: rebuild the engine") from exc
    return sidecar
