"""ONNX (FP32, FP16 or Q/DQ) -> serialized TensorRT engine, with its JSON sidecar.

The network is strongly typed, so the engine runs each layer in the precision the graph gives it.
One optimisation profile covers batch and height/width. With full TensorRT a timing cache file is
loaded before and saved after each build, so rebuilding skips the tactic timing; TensorRT-RTX ignores
timing caches, needs no GPU to build (CPU-only ahead-of-time) and takes target compute capabilities.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engines.backend import TrtBackend
from hinet_deploy.errors import HinetDeployError
from hinet_deploy.files import atomic_path

# Defaults that suit tiling: the official 256 crop is the optimum; the range covers blend tiles of
# 512 in batches of 4 and whole 1024x1024 images (FINDINGS.md built 64..1024 for the gopro variant).
DEFAULT_MIN = (1, 64, 64)
DEFAULT_OPT = (1, 256, 256)
DEFAULT_MAX = (4, 1024, 1024)
DEFAULT_WORKSPACE_MB = 4096


@dataclass
class Profile:
    min: tuple[int, int, int] = DEFAULT_MIN  # (N, H, W); channels are always 3
    opt: tuple[int, int, int] = DEFAULT_OPT
    max: tuple[int, int, int] = DEFAULT_MAX

    def check(self, multiple: int) -> None:
        for name, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            n, h, w = shape
            if n < 1 or h <= 0 or w <= 0 or h % multiple or w % multiple:
                raise HinetDeployError(f"profile {name} {n}x{h}x{w}: height and width must be "
                                       f"positive multiples of {multiple}, batch at least 1")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise HinetDeployError(f"profile shapes must grow min <= opt <= max: {self.min}, "
                                   f"{self.opt}, {self.max}")

    def as_dict(self) -> dict:
        return {k: [v[0], 3, v[1], v[2]] for k, v in asdict(self).items()}


@dataclass
class BuildOptions:
    profile: Profile = field(default_factory=Profile)
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Path | None = None
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX only: e.g. ("SM86", "SM89")


class _Logger:
    """Collects the backend's messages so a failed build can show what the backend said."""

    def __init__(self, trt, verbose: bool):
        self.messages: list[str] = []
        outer = self

        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                if severity <= trt.ILogger.Severity.WARNING:
                    outer.messages.append(f"[{severity.name}] {msg}")
                    if verbose:
                        print(f"[{trt.__name__}] {msg}", file=sys.stderr)

        self.logger = Logger()


def _parse(backend: TrtBackend, builder, onnx_path: Path, log: _Logger):
    trt = backend.module
    network = builder.create_network(backend.network_flags())
    parser = trt.OnnxParser(network, log.logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise HinetDeployError(f"{backend.name} {backend.version} could not parse {onnx_path}: "
                               + " | ".join(errors))
    return network, parser


def _config(backend: TrtBackend, builder, network, options: BuildOptions):
    trt = backend.module
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    p = options.profile
    name = network.get_input(0).name
    profile.set_shape(name, *[(s[0], 3, s[1], s[2]) for s in (p.min, p.opt, p.max)])
    config.add_optimization_profile(profile)
    if options.compute_capabilities:
        if backend.name != "tensorrt_rtx":
            raise HinetDeployError("target compute capabilities are a TensorRT-RTX option; full "
                                   "TensorRT builds for the GPU it runs on")
        config.num_compute_capabilities = len(options.compute_capabilities)
        for i, cc in enumerate(options.compute_capabilities):
            try:
                config.set_compute_capability(getattr(trt.ComputeCapability, cc), i)
            except AttributeError as exc:
                known = [c for c in dir(trt.ComputeCapability) if c.startswith("SM")]
                raise HinetDeployError(f"unknown compute capability {cc}; known: "
                                       f"{', '.join(known)}") from exc
    return config


def has_timing_cache(backend: TrtBackend) -> bool:
    """TensorRT-RTX deprecated timing caches in 1.2 and ignores them (its JIT runtime cache works
    at run time instead); full TensorRT uses them to skip tactic timing on rebuilds."""
    return backend.name == "tensorrt"


def _load_timing_cache(config, path: Path) -> bool:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return bool(data)


def _save_timing_cache(config, path: Path | None) -> None:
    if path is None:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))


def build_engine(backend: TrtBackend, onnx_path: Path, engine_path: Path, options: BuildOptions,
                 verbose: bool = False) -> dict:
    """Builds and writes the engine (atomically); returns facts for the sidecar."""
    trt = backend.module
    log = _Logger(trt, verbose)
    builder = trt.Builder(log.logger)
    network, _parser = _parse(backend, builder, onnx_path, log)
    config = _config(backend, builder, network, options)
    cache_path = options.timing_cache if has_timing_cache(backend) else None
    cache_loaded = _load_timing_cache(config, cache_path) if cache_path else False
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        tail = " | ".join(m for m in log.messages if "ERROR" in m)[-2000:] or "no message"
        raise HinetDeployError(f"{backend.name} {backend.version} failed to build {onnx_path}: "
                               f"{tail}")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    _save_timing_cache(config, cache_path)
    return {"build_seconds": round(seconds, 2), "timing_cache": str(cache_path) if cache_path else None,
            "timing_cache_loaded": cache_loaded, "engine_bytes": engine_path.stat().st_size}


def write_sidecar(engine_path: Path, facts: dict) -> Path:
    """ENGINE.json beside ENGINE."""
    path = engine_path.with_name(engine_path.name + ".json")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    return path


def read_sidecar(engine_path: Path) -> dict:
    path = Path(engine_path).with_name(Path(engine_path).name + ".json")
    if not path.is_file():
        raise HinetDeployError(f"engine {engine_path} has no sidecar {path.name}: rebuild it with "
                               f"hinet-deploy build")
    return json.loads(path.read_text())
