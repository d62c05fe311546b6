"""Checkpoint -> ONNX of a precision -> engine: the chain `hinet-deploy build` and build_trt.py run.

Every intermediate graph of a successful build is kept on disk beside the engine, and the sidecar
names the exact one the engine was built from.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from hinet_deploy.export.checkpoint import load_checkpoint
from hinet_deploy.common.files import DEFAULT_OUTPUT_DIR, file_sha256
from hinet_deploy.common.progress import say
from hinet_deploy.common.limits import HINET_SIZE_MULTIPLE
from hinet_deploy.engines.plugin.support import plugin_host, register_plugin
from hinet_deploy.engines.sidecar import EngineSidecar
from hinet_deploy.export.metadata import read_graph_metadata
from hinet_deploy.export.onnx_export import export_onnx
from hinet_deploy.export.precision import DEFAULT_FLOAT_LAYERS, to_fp16, to_int8
from hinet_deploy.runtime.backends.openvino import INT8_MODEL
from hinet_deploy.build.calibration import (CalibOptions, calibration_cache,
                                           calibration_images, calibration_reader)
from hinet_deploy.common.errors import HinetDeployError

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_ENGINE_DIR = DEFAULT_OUTPUT_DIR / "engines"


@dataclass
class GraphRequest:
    ckpt: Path | None = None
    onnx: Path | None = None
    variant: str | None = None
    precision: str = "fp16"
    io_fp16: bool = False
    hin_plugin: bool = False
    out_dir: Path = DEFAULT_ENGINE_DIR
    calib: CalibOptions = field(default_factory=CalibOptions)


_log = say


def fp32_graph(req: GraphRequest) -> Path:
    """The verified FP32 export of the checkpoint, reused when it was made from the same file."""
    if req.onnx is not None:
        read_graph_metadata(req.onnx)  # a readable graph, or one clear error
        return req.onnx
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    ckpt = req.ckpt or DEMO_CHECKPOINT
    path = req.out_dir / f"{ckpt.stem}.fp32.onnx"
    # One FP32 graph per checkpoint: the build's own from an earlier build, or the one `export`
    # wrote with its defaults (a dynamic graph of the restoration alone), checked by the hash of
    # the checkpoint it records.
    reusable = [path] + ([] if req.variant else [DEFAULT_OUTPUT_DIR / f"{ckpt.stem}.onnx"])
    checkpoint_hash = None
    for candidate in reusable:
        if not candidate.is_file():
            continue
        meta = read_graph_metadata(candidate)
        checkpoint_hash = checkpoint_hash or file_sha256(ckpt)
        if meta.get("checkpoint_sha256") == checkpoint_hash and meta.get("outputs") == "stage2" \
                and meta.get("dynamic", "true") == "true":
            _log(f"reusing {candidate} (exported from the same checkpoint)")
            return candidate
    report = export_onnx(load_checkpoint(ckpt, req.variant), path, log=_log)
    _log(report.summary())
    return path


def precision_graph(req: GraphRequest) -> tuple[Path, dict]:
    """The ONNX graph for the requested precision, and what was done to make it."""
    if req.precision not in PRECISIONS:
        raise HinetDeployError(f"unknown precision {req.precision!r}; choose {', '.join(PRECISIONS)}")
    src = fp32_graph(req)
    stem = src.name.removesuffix(".onnx").removesuffix(".fp32")
    if req.precision == "fp32":
        return src, {}
    if req.precision == "fp16":
        dst = req.out_dir / f"{stem}.fp16{'-io16' if req.io_fp16 else ''}.onnx"
        _log(f"writing FP16 graph {dst} (instance norm kept in FP32)")
        return to_fp16(src, dst, req.io_fp16), {"io_fp16": req.io_fp16}
    calib = req.calib
    images = calibration_images(calib)
    reader, fingerprint = calibration_reader(calib, images)
    cache = calibration_cache(calib, file_sha256(src), fingerprint)
    chosen = {}
    if calib.auto is not None:
        from hinet_deploy.build.sensitivity import Sensitivity

        choice = Sensitivity(src, calib, log=_log, calib_images=images).choose(calib.auto)
        _log(choice.summary())
        calib = dataclasses.replace(calib, float_layers=choice.layers)
        chosen = {"float_choice": choice.facts()}
    dst = req.out_dir / f"{stem}.int8-{calib.method}{_float_tag(calib.float_layers)}.onnx"
    _log(f"writing Q/DQ graph {dst} ({calib.method} calibration on {len(reader)} crops of "
         f"{calib.crop}; float layers: {', '.join(calib.float_layers) or 'none'})")
    facts = to_int8(src, dst, reader, method=calib.method, float_layers=calib.float_layers,
                    cache_path=cache)
    if facts["calibration_cache_hit"]:
        _log(f"calibration ranges reused from {facts['calibration_cache']}")
    facts["calibration_images"] = str(calib.folder or "shipped photographs + sigma 25 noise")
    facts["float_layers"] = list(calib.float_layers)
    return dst, {**facts, **chosen}


def _float_tag(layers) -> str:
    """The part of an INT8 graph's name that tells its float layers apart (none for the default
    list), so graphs and engines of different choices never overwrite each other."""
    if tuple(layers) == DEFAULT_FLOAT_LAYERS:
        return ""
    if not layers:
        return "-allint8"
    return "-float" + hashlib.sha256(" ".join(sorted(layers)).encode()).hexdigest()[:6]


def precision_graphs(req: GraphRequest, precisions=PRECISIONS):
    """(precision, graph) for each precision, made from one request that is left unchanged."""
    for precision in precisions:
        graph, _ = precision_graph(dataclasses.replace(req, precision=precision))
        yield precision, graph


def fused_graph(graph: Path) -> tuple[Path, int]:
    """Writes GRAPH.hin.onnx with every HIN block folded into one plugin node."""
    import onnx

    from hinet_deploy.export.hin_fusion import fold_hin_blocks
    from hinet_deploy.common.files import atomic_path

    fused, report = fold_hin_blocks(onnx.load(str(graph)))
    path = graph.with_name(graph.name.removesuffix(".onnx") + ".hin.onnx")
    with atomic_path(path) as tmp:
        onnx.save(fused, str(tmp))
    _log(f"folded {report.fused} HIN blocks into plugin nodes: {path}"
         + (f"; left alone: {len(report.skipped)}" if report.skipped else ""))
    return path, report.fused


def _hin_plugin_graph(req: GraphRequest, graph: Path, trt_module):
    """The graph to build (the fused one where the plugin can be hosted), the facts to record, and
    how the build must run (engines.plugin.support.PluginHost; None without the plugin)."""
    if not req.hin_plugin:
        return graph, {"hin_fused": 0}, None
    fused, count = fused_graph(graph)
    host = plugin_host(trt_module)
    facts = {"hin_fused": count, "hin_graph": str(fused)}
    if host.reason is not None:
        _log(f"building WITHOUT the HIN plugin: {host.reason}")
        return graph, {**facts, "hin_plugin_unavailable": host.reason}, None
    if host.workaround is not None:
        _log(f"HIN plugin with {trt_module.name}: {host.workaround}")
        facts["hin_plugin_workaround"] = host.workaround
    if host.env is None:
        register_plugin(trt_module)  # this process parses the graph
    return fused, facts, host


def build(req: GraphRequest, engine_path: Path | None, tensorrt: str | None, options,
          verbose: bool = False) -> tuple[Path, EngineSidecar]:
    """Makes the graph, builds the engine, writes engine and sidecar; returns both."""
    with _removed_on_failure(req):
        return _build(req, engine_path, tensorrt, options, verbose)


def build_openvino(req: GraphRequest, output: Path | None) -> tuple[Path, dict]:
    """The FP32 graph, then NNCF's INT8 model for OpenVINO with its sidecar; returns the model's
    path and the sidecar's facts."""
    from hinet_deploy.build.nncf_model import require_nncf
    from hinet_deploy.build.openvino_int8 import build_openvino_int8

    require_nncf()  # before any long work
    with _removed_on_failure(req):
        return build_openvino_int8(fp32_graph(req), req.calib, output, req.out_dir, _float_tag,
                                   log=_log)


def backend_models_here() -> list[str]:
    """The contenders of the models built for one backend alone that can be built here:
    `openvino:int8` where OpenVINO and NNCF are installed."""
    import importlib.util

    return [INT8_MODEL] if all(importlib.util.find_spec(m) is not None
                                    for m in ("openvino", "nncf")) else []


def backend_models(req: GraphRequest, log=_log) -> dict:
    """The models built for one backend alone, for the checks (ModelFiles.built): OpenVINO INT8
    with the request's calibration and float layers where OpenVINO and NNCF are installed (NNCF's
    quantized model is cached, so this costs its measurement and a save); where NNCF is missing,
    one line says what is not compared and why."""
    import importlib.util

    from hinet_deploy.common.lazy import install_hint

    if not backend_models_here():
        if importlib.util.find_spec("openvino") is not None:
            log(f"{INT8_MODEL} is not compared: building it needs nncf "
                f"({install_hint('nncf')})")
        return {}
    int8 = dataclasses.replace(req, precision="int8")
    path, _ = build_openvino(int8, None)
    return {INT8_MODEL: path}


@contextlib.contextmanager
def _removed_on_failure(req: GraphRequest):
    """A build that fails (or is interrupted) removes the files it wrote in its folder (graphs of
    hundreds of MB for the big variants); only the calibration caches stay, which the next build
    reuses."""
    folder = Path(req.out_dir)
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        yield
    except BaseException:
        made = set(folder.iterdir()) - before if folder.is_dir() else set()
        for path in made:
            if path.is_file():
                path.unlink()
        if made:
            _log(f"removed what this build wrote: {', '.join(sorted(p.name for p in made))}")
        if req.precision == "int8" and any(Path(req.calib.cache_dir).glob("*.json")):
            _log(f"kept the calibration ranges in {req.calib.cache_dir} (reused by the next build)")
        raise


def _build(req: GraphRequest, engine_path: Path | None, tensorrt: str | None, options,
           verbose: bool = False) -> tuple[Path, EngineSidecar]:
    from hinet_deploy.engines.build import (build_engine, build_engine_in_child,
                                            check_compute_capabilities, default_timing_cache,
                                            engine_name, new_sidecar)
    from hinet_deploy.engines.tensorrt_module import import_tensorrt

    trt_module = import_tensorrt(tensorrt)  # before any long work: fail fast without TensorRT
    options.profile.check(HINET_SIZE_MULTIPLE)  # likewise for a bad profile, before calibration
    check_compute_capabilities(trt_module, options.compute_capabilities)  # and for bad targets
    graph, graph_facts = precision_graph(req)
    engine_path = engine_path or req.out_dir / engine_name(graph, trt_module, options)
    graph, hin_facts, host = _hin_plugin_graph(req, graph, trt_module)
    if options.timing_cache is None:
        options.timing_cache = default_timing_cache(engine_path.parent, trt_module)
    multiple = int(read_graph_metadata(graph).get("size_multiple", HINET_SIZE_MULTIPLE))
    if multiple != HINET_SIZE_MULTIPLE:  # a HINet of another depth
        options.profile.check(multiple)
    _log(f"building {engine_path} with {trt_module.name} {trt_module.version}")
    facts = {"onnx": str(graph), "onnx_sha256": file_sha256(graph), **hin_facts,
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             **graph_facts}
    sidecar = new_sidecar(trt_module, options, req.precision, multiple, host is not None, facts)
    if host is not None and host.env is not None:
        sidecar = build_engine_in_child(trt_module, graph, engine_path, options, sidecar, host.env,
                                        verbose)
    else:
        sidecar = build_engine(trt_module, graph, engine_path, options, sidecar, verbose)
    if host is not None and sidecar.facts.get("plugin_layers") != hin_facts["hin_fused"]:
        raise HinetDeployError(f"the network {trt_module.name} parsed from {graph} has "
                               f"{sidecar.facts.get('plugin_layers')} plugin layers, not the "
                               f"{hin_facts['hin_fused']} fused HIN nodes of the graph")
    return engine_path, sidecar


# Engines for validate and bench: what runs here, and why not where nothing can.
CHECK_PROFILE_MAX = (1, 2048, 2048)  # whole images up to 2048x2048 (larger: tiled by the Restorer)


def engines_for_checks(req: GraphRequest, max_shape=CHECK_PROFILE_MAX, log=_log):
    """[(precision, engine path)] built for every precision where engines run here, and
    [not-run rows] saying why for those that cannot (a missing TensorRT, no GPU, an unsupported
    GPU, a plugin the TensorRT cannot host)."""
    from hinet_deploy.engines.build import BuildOptions, Profile
    from hinet_deploy.engines.tensorrt_module import import_tensorrt
    from hinet_deploy.engines.targets import engines_unavailable

    reason = engines_unavailable()
    if reason is not None:
        rows = [{"contender": f"tensorrt:{p}", "backend": "tensorrt", "precision": p,
                 "reason": reason} for p in PRECISIONS]
        return [], rows
    trt_module = import_tensorrt()
    plugin = plugin_host(trt_module).reason
    rows = [{"contender": f"{trt_module.name}+hin-plugin:{p}", "backend":
             f"{trt_module.name}+hin-plugin", "precision": p, "reason": plugin}
            for p in PRECISIONS] if plugin else []
    built = []
    for precision in PRECISIONS:
        profile = Profile(max=tuple(max_shape))
        engine, _ = build(dataclasses.replace(req, precision=precision), None, None,
                          BuildOptions(profile=profile))
        log(f"built {engine.name} for the check")
        built.append((precision, engine))
    return built, rows
