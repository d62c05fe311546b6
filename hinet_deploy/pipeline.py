"""Checkpoint -> ONNX of a precision -> engine: the chain `hinet-deploy build` and build_trt.py run.

Every intermediate graph is kept on disk beside the engine, and the sidecar names the exact one the
engine was built from.
"""
from __future__ import annotations

import dataclasses
import datetime
import sys
from dataclasses import dataclass, field
from pathlib import Path

from export.checkpoint import load_checkpoint
from export.model import SIZE_MULTIPLE
from export.onnx_export import export_onnx, file_sha256, read_metadata
from export.precision import DEFAULT_CALIBRATION, DEFAULT_FLOAT_LAYERS, to_fp16, to_int8
from hinet_deploy.errors import HinetDeployError

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_ENGINE_DIR = Path("engines") / "out"
DEFAULT_CALIB_CACHE_DIR = Path("build") / "calib-cache"


@dataclass
class CalibOptions:
    folder: Path | None = None  # None: the shipped photographs with the demo model's noise
    count: int = 32
    crop: int = 256
    mode: str = "random"
    method: str = DEFAULT_CALIBRATION
    float_layers: tuple[str, ...] = DEFAULT_FLOAT_LAYERS
    cache_dir: Path = DEFAULT_CALIB_CACHE_DIR
    seed: int = 0


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


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fp32_graph(req: GraphRequest) -> Path:
    """The verified FP32 export of the checkpoint, reused when it was made from the same file."""
    if req.onnx is not None:
        if not req.onnx.is_file():
            raise HinetDeployError(f"ONNX file {req.onnx} does not exist")
        return req.onnx
    from hinet_deploy.demo import DEMO_CHECKPOINT

    ckpt = req.ckpt or DEMO_CHECKPOINT
    path = req.out_dir / f"{ckpt.stem}.fp32.onnx"
    if path.is_file():
        meta = graph_metadata(path)
        if meta.get("checkpoint_sha256") == file_sha256(ckpt):
            _log(f"reusing {path} (exported from the same checkpoint)")
            return path
    report = export_onnx(load_checkpoint(ckpt, req.variant), path, log=_log)
    _log(report.summary())
    return path


def graph_metadata(path: Path) -> dict[str, str]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return read_metadata(onnx.load(str(path), load_external_data=False))
    except (DecodeError, OSError, ValueError) as exc:
        raise HinetDeployError(f"{path} is not a readable ONNX graph ({exc})") from exc


def _calibration_reader(calib: CalibOptions):
    from calib.data import CalibrationReader, default_images, folder_images, make_crops

    images = folder_images(calib.folder) if calib.folder else default_images(seed=calib.seed)
    crops = make_crops(images, calib.crop, calib.count, calib.mode, calib.seed)
    return CalibrationReader(crops), crops.fingerprint()


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
    reader, fingerprint = _calibration_reader(calib)
    key = f"{file_sha256(src)[:16]}-{calib.method}-{fingerprint}"
    dst = req.out_dir / f"{stem}.int8-{calib.method}.onnx"
    _log(f"writing Q/DQ graph {dst} ({calib.method} calibration on {len(reader)} crops of "
         f"{calib.crop}; float layers: {', '.join(calib.float_layers) or 'none'})")
    facts = to_int8(src, dst, reader, method=calib.method, float_layers=calib.float_layers,
                    cache_path=calib.cache_dir / f"{key}.json")
    if facts["calibration_cache_hit"]:
        _log(f"calibration ranges reused from {facts['calibration_cache']}")
    facts["calibration_images"] = str(calib.folder or "shipped photographs + sigma 25 noise")
    return dst, facts


def precision_graphs(req: GraphRequest, precisions=PRECISIONS):
    """(precision, graph) for each precision, made from one request that is left unchanged."""
    for precision in precisions:
        graph, _ = precision_graph(dataclasses.replace(req, precision=precision))
        yield precision, graph


def plugin_support(backend) -> str | None:
    """None where the backend can host the fused HIN plugin, else why not."""
    if backend.name == "tensorrt_rtx":
        # Re-checked by tests/test_engines.py::test_rtx_python_plugin_abort_is_still_there.
        return ("TensorRT-RTX 1.7 cannot host a Python IPluginV3 plugin: its ONNX parser calls "
                "std::terminate right after the plugin is created, even for a minimal plugin")
    return None  # full TensorRT: engines.plugin.hin_plugin (its GPU path has not run yet; README)


def fused_graph(graph: Path) -> tuple[Path, int]:
    """Writes GRAPH.hin.onnx with every HIN block folded into one plugin node."""
    import onnx

    from export.hin_fusion import fold_hin_blocks
    from hinet_deploy.files import atomic_path

    fused, report = fold_hin_blocks(onnx.load(str(graph)))
    path = graph.with_name(graph.name.removesuffix(".onnx") + ".hin.onnx")
    with atomic_path(path) as tmp:
        onnx.save(fused, str(tmp))
    _log(f"folded {report.fused} HIN blocks into plugin nodes: {path}"
         + (f"; left alone: {len(report.skipped)}" if report.skipped else ""))
    return path, report.fused


def build(req: GraphRequest, engine_path: Path | None, backend_name: str | None, options,
          verbose: bool = False) -> tuple[Path, dict]:
    """Makes the graph, builds the engine, writes the sidecar; returns (engine, sidecar facts)."""
    from engines.backend import load_backend
    from engines.build import build_engine, write_sidecar

    backend = load_backend(backend_name)  # before any long work: fail fast without TensorRT
    options.profile.check(SIZE_MULTIPLE)  # likewise for a bad profile, before calibration
    graph, graph_facts = precision_graph(req)
    engine_path = engine_path or req.out_dir / f"{graph.name.removesuffix('.onnx')}.engine"
    hin = {"hin_fused": 0, "hin_plugin": False}
    if req.hin_plugin:
        fused, count = fused_graph(graph)
        reason = plugin_support(backend)
        hin = {"hin_fused": count, "hin_graph": str(fused.resolve()), "hin_plugin": reason is None}
        if reason is None:
            from engines.plugin.hin_plugin import register

            register(backend.module)  # before parsing: the parser creates the plugin from the node
            graph = fused
        else:
            hin["hin_plugin_unavailable"] = reason
            _log(f"building WITHOUT the HIN plugin: {reason}")
    if options.timing_cache is None:
        options.timing_cache = engine_path.parent / f"{backend.name}.timing.cache"
    multiple = int(graph_metadata(graph).get("size_multiple", SIZE_MULTIPLE))
    if multiple != SIZE_MULTIPLE:  # a HINet of another depth
        options.profile.check(multiple)
    _log(f"building {engine_path} with {backend.name} {backend.version}")
    facts = build_engine(backend, graph, engine_path, options, verbose)
    sidecar = {
        "backend": backend.name, "backend_version": backend.version,
        "precision": req.precision, "onnx": str(graph.resolve()), "onnx_sha256": file_sha256(graph),
        "profiles": [options.profile.as_dict()], "input": "input", "output": "output",
        "size_multiple": multiple, "workspace_mb": options.workspace_mb,
        "compute_capabilities": list(options.compute_capabilities),
        **hin,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **graph_facts, **facts,
    }
    write_sidecar(engine_path, sidecar)
    return engine_path, sidecar
