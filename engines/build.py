"""ONNX (FP32, FP16 or Q/DQ) -> serialized TensorRT engine, with its JSON sidecar.

The network is strongly typed, so the engine runs each layer in the precision the graph gives it.
One optimisation profile covers batch and height/width. With full TensorRT a timing cache file is
loaded before and saved after each build, so rebuilding skips the tactic timing; TensorRT-RTX ignores
timing caches, needs no GPU to build (CPU-only ahead-of-time) and takes target compute capabilities.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hinet_deploy.engines.sidecar import EngineSidecar, write_sidecar
from hinet_deploy.export.hin_spec import PLUGIN_VERSION
from hinet_deploy.engines.targets import RTX_DEFAULT_TARGETS, RTX_DEFAULT_TARGETS_NOTE
from hinet_deploy.engines.tensorrt_module import TensorRtModule, collecting_logger
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import atomic_path

# Defaults that suit tiling: the official 256 crop is the optimum; the range covers blend tiles of
# 512 in batches of 4 and whole 1024x1024 images (measured: the gopro variant builds over
# 64..1024 with TensorRT-RTX on the CPU in 2.4 s, 1.3 GB peak).
DEFAULT_MIN = (1, 64, 64)
DEFAULT_OPT = (1, 256, 256)
DEFAULT_MAX = (4, 1024, 1024)
# No workspace limit by default: TensorRT's own default is the device's whole memory, a ceiling on
# which tactics are considered, not an allocation (TensorRT API docs, MemoryPoolType.kWORKSPACE).
# A fixed 4096 MB ruled out every tactic of a layer of the 88M-parameter variants at 4x1024x1024
# (INT8 asked for 4.4 GB) and the build failed.
DEFAULT_WORKSPACE_MB = None


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
    workspace_mb: int | None = DEFAULT_WORKSPACE_MB  # None: TensorRT's default (device memory)
    timing_cache: Path | None = None
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX only: e.g. ("SM86", "SM89")


def engine_name(graph: Path, trt_module: TensorRtModule, options: BuildOptions) -> str:
    """An engine's file name says what went into it (graph and precision, profile, TensorRT module
    and version, targets), so builds with other options never overwrite each other."""
    p = options.profile
    shapes = "_".join("x".join(map(str, s)) for s in (p.min, p.opt, p.max))
    targets = "".join(f"-{cc.lower()}" for cc in options.compute_capabilities)
    return (f"{graph.name.removesuffix('.onnx')}.{shapes}.{trt_module.name}-"
            f"{trt_module.version}{targets}.engine")


def new_sidecar(trt_module: TensorRtModule, options: BuildOptions, precision: str,
                size_multiple: int, hin_plugin: bool, facts: dict) -> EngineSidecar:
    """The sidecar of an engine about to be built; build_engine completes it with the network's
    tensors and the build's own facts."""
    targets, default = tuple(options.compute_capabilities), {}
    if trt_module.name == "tensorrt_rtx" and not targets:
        targets, default = RTX_DEFAULT_TARGETS, {"default_targets": RTX_DEFAULT_TARGETS_NOTE}
    return EngineSidecar(
        tensorrt=trt_module.name, tensorrt_version=trt_module.version, precision=precision,
        profile=options.profile.as_dict(), size_multiple=size_multiple,
        compute_capabilities=targets, hin_plugin=hin_plugin,
        facts={"workspace_mb": options.workspace_mb, **default, **facts,
               **({"hin_plugin_version": PLUGIN_VERSION} if hin_plugin else {})})


def runs_on(sidecar: EngineSidecar) -> str:
    """Which GPUs the engine runs on, in words, for the build's last line."""
    if not sidecar.compute_capabilities:
        return "the GPU model it was built on"
    named = ", ".join(sidecar.compute_capabilities)
    return f"{named} and later" if sidecar.facts.get("default_targets") else named


def _parse(trt_module: TensorRtModule, builder, onnx_path: Path, logger):
    trt = trt_module.module
    network = builder.create_network(trt_module.network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise HinetDeployError(f"{trt_module.name} {trt_module.version} could not parse {onnx_path}: "
                               + " | ".join(errors))
    return network, parser


def _config(trt_module: TensorRtModule, builder, network, options: BuildOptions):
    trt = trt_module.module
    config = builder.create_builder_config()
    if options.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    p = options.profile
    name = network.get_input(0).name
    profile.set_shape(name, *[(s[0], 3, s[1], s[2]) for s in (p.min, p.opt, p.max)])
    config.add_optimization_profile(profile)
    if options.compute_capabilities:
        targets = check_compute_capabilities(trt_module, options.compute_capabilities)
        config.num_compute_capabilities = len(targets)
        for i, target in enumerate(targets):
            config.set_compute_capability(target, i)
    return config


def plugin_layers(trt, network) -> int:
    """How many plugin layers the parsed network holds (the fused HIN blocks, where asked for)."""
    kinds = {getattr(trt.LayerType, k) for k in ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3")
             if hasattr(trt.LayerType, k)}
    return sum(network.get_layer(i).type in kinds for i in range(network.num_layers))


def network_io(network) -> dict:
    """The input and output tensor names of the parsed network, for the sidecar (the runtime
    checks the engine's own against them); a HINet graph has exactly one input."""
    inputs = tuple(network.get_input(i).name for i in range(network.num_inputs))
    if len(inputs) != 1:
        raise HinetDeployError(f"the graph has inputs {list(inputs)}; a HINet graph has one")
    return {"inputs": inputs,
            "outputs": tuple(network.get_output(i).name for i in range(network.num_outputs))}


def check_compute_capabilities(trt_module: TensorRtModule, names) -> list:
    """The TensorRT-RTX ComputeCapability values of names like SM86; one clear error otherwise."""
    if not names:
        return []
    if trt_module.name != "tensorrt_rtx":
        raise HinetDeployError("target compute capabilities are a TensorRT-RTX option; full "
                               "TensorRT builds for the GPU it runs on")
    enum = trt_module.module.ComputeCapability
    unknown = [n for n in names if not hasattr(enum, n)]
    if unknown:
        known = [c for c in dir(enum) if c.startswith("SM")]
        raise HinetDeployError(f"unknown compute capability {', '.join(unknown)}; known: "
                               f"{', '.join(known)}")
    return [getattr(enum, n) for n in names]


def gpu_tag() -> str:
    """The build GPU in a file name ("sm89-NVIDIA-GeForce-RTX-4090"), or "nogpu": a timing cache
    holds tactic timings of one GPU and TensorRT version, so its name says which."""
    try:
        from cuda.bindings import runtime as rt

        err, props = rt.cudaGetDeviceProperties(0)
    except ImportError:
        return "nogpu"
    if err != rt.cudaError_t.cudaSuccess:
        return "nogpu"
    name = props.name.decode(errors="replace").strip("\x00")
    return f"sm{props.major}{props.minor}-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def default_timing_cache(folder: Path, trt_module: TensorRtModule) -> Path:
    return folder / f"{trt_module.name}-{trt_module.version}-{gpu_tag()}.timing.cache"


def has_timing_cache(trt_module: TensorRtModule) -> bool:
    """TensorRT-RTX deprecated timing caches in 1.2 and ignores them (its JIT runtime cache works
    at run time instead); full TensorRT uses them to skip tactic timing on rebuilds."""
    return trt_module.name == "tensorrt"


def load_timing_cache(config, path: Path) -> tuple[bool, str | None]:
    """Gives the config a timing cache: the file's when TensorRT accepts it, else a fresh one.
    Returns (loaded, why not). `set_timing_cache` returns False for a cache made by another GPU or
    TensorRT version (IBuilderConfig docs); the build then times tactics afresh instead of failing."""
    data = path.read_bytes() if path.is_file() else b""
    if data:
        cache = config.create_timing_cache(data)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return True, None
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        return False, "TensorRT refused a fresh timing cache"
    return False, f"{path.name} was made by another GPU or TensorRT version" if data else None


def timing_cache_bytes(config) -> bytes | None:
    """The config's timing cache serialised, or None where TensorRT holds none."""
    cache = config.get_timing_cache()
    return None if cache is None else bytes(cache.serialize())


def _save(engine_path: Path, serialized: bytes, sidecar: EngineSidecar, cache_path: Path | None,
          cache: bytes | None) -> None:
    """Engine and sidecar appear together or not at all; the timing cache after them."""
    with atomic_path(engine_path) as engine_tmp:
        engine_tmp.write_bytes(serialized)
        write_sidecar(engine_path, sidecar)  # renamed first, once the engine is complete
    if cache_path is not None and cache is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(cache)


def build_engine_in_child(trt_module: TensorRtModule, onnx_path: Path, engine_path: Path,
                          options: BuildOptions, sidecar: EngineSidecar, env: dict[str, str],
                          verbose: bool = False, plugin: bool = True) -> EngineSidecar:
    """build_engine in a child process that starts with `env` added to this one's (the plugin's
    creator registered there first when `plugin`); its errors come back as this process's."""
    request = {"tensorrt": trt_module.name, "graph": onnx_path, "engine": engine_path,
               "options": options, "sidecar": sidecar, "verbose": verbose, "plugin": plugin}
    with tempfile.TemporaryDirectory(prefix="hinet-deploy-build-") as tmp:
        request_path, result_path = Path(tmp) / "request.pickle", Path(tmp) / "result.pickle"
        request_path.write_bytes(pickle.dumps(request))
        done = subprocess.run([sys.executable, "-m", "hinet_deploy.engines.build_child",
                               str(request_path), str(result_path)], env={**os.environ, **env})
        if done.returncode != 0 or not result_path.is_file():
            how = f"signal {signal.Signals(-done.returncode).name}" if done.returncode < 0 \
                else f"exit code {done.returncode}"
            raise HinetDeployError(f"{trt_module.name} {trt_module.version} ended with {how} "
                                   f"while building {onnx_path} in a child process")
        result = pickle.loads(result_path.read_bytes())
    if "error" in result:
        raise HinetDeployError(result["error"])
    return result["sidecar"]


def build_engine(trt_module: TensorRtModule, onnx_path: Path, engine_path: Path,
                 options: BuildOptions, sidecar: EngineSidecar, verbose: bool = False) -> EngineSidecar:
    """Builds the engine and writes it with its sidecar (given, completed with the build facts)."""
    trt = trt_module.module
    logger = collecting_logger(trt)
    with logger.capture(verbose) as messages:
        builder = trt.Builder(logger)
        network, _parser = _parse(trt_module, builder, onnx_path, logger)
        sidecar = dataclasses.replace(sidecar, **network_io(network))
        layers = plugin_layers(trt, network)
        config = _config(trt_module, builder, network, options)
        cache_path = options.timing_cache if has_timing_cache(trt_module) else None
        loaded, why = load_timing_cache(config, cache_path) if cache_path else (False, None)
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
    if serialized is None:
        tail = " | ".join(m for m in messages if "ERROR" in m)[-2000:] or "no message"
        hint = ""
        if options.workspace_mb is not None and "OutOfMemory" in tail:
            hint = (f" (the workspace was capped at {options.workspace_mb} MB: raise "
                    f"--workspace-mb, or leave it out for TensorRT's default)")
        raise HinetDeployError(f"{trt_module.name} {trt_module.version} failed to build "
                               f"{onnx_path}: {tail}{hint}")
    serialized = bytes(serialized)
    cache = timing_cache_bytes(config) if cache_path else None
    facts = {"build_seconds": round(seconds, 2), "engine_bytes": len(serialized),
             "plugin_layers": layers,
             "timing_cache": str(cache_path) if cache is not None else None,
             "timing_cache_loaded": loaded, **({"timing_cache_refused": why} if why else {})}
    sidecar = dataclasses.replace(sidecar, facts={**sidecar.facts, **facts})
    _save(engine_path, serialized, sidecar, cache_path, cache)
    return sidecar
