"""ONNX Runtime: an ONNX graph (FP32, FP16 or Q/DQ), on the CPU or a CUDA GPU."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.lazy import require
from hinet_deploy.export.metadata import (OUTPUT_NAME, check_external_files, from_properties,
                                          graph_limits)
from hinet_deploy.runtime.backends.base import BackendBase, option

# Preferred order; only those the installed onnxruntime offers are used. The TensorRT EP needs the
# full TensorRT libraries, so it is tried only when asked for explicitly.
ORT_DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
ORT_LOG_FATAL = 4  # SessionOptions.log_severity_level: 0 verbose .. 3 error, 4 fatal


# A graph whose weights lie in external data files is small itself (onnx.save moves every tensor
# over 1 kB out); larger graphs hold their weights inline and are not parsed a second time when
# the backend opens them.
EXTERNAL_DATA_GRAPH_BYTES = 4 * 2**20


def _check_external_data(path: Path) -> None:
    """The graph's external data files, checked before ONNX Runtime opens them (a FIFO there would
    block it forever; a path leading out of the folder is refused): with the `onnx` package where
    it is installed (the runtime-only install has none, and then ONNX Runtime's own checks stand)."""
    try:
        import onnx
    except ImportError:
        return
    if path.stat().st_size > EXTERNAL_DATA_GRAPH_BYTES:
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a graph at all: ONNX Runtime's own refusal says so
        return
    check_external_files(model, path)


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    providers: tuple | None = option(None, "ONNX Runtime's execution providers, in order "
                                           "(default: CUDA where it runs, else CPU)", cli=False)
    threads: int | None = option(None, "CPU threads (default: all)", threads=True)
    # Tiled modes exist to bound memory: trade the arena's reuse for a lower peak.
    memory_arena: bool = option(True, "ONNX Runtime's CPU memory arena", cli=False, tiled=False)
    session_config: tuple = option((), "ONNX Runtime session config entries, (key, value) pairs",
                                   cli=False)


class OnnxRuntimeBackend(BackendBase):
    name = "onnxruntime"
    suffixes = (".onnx",)
    extra = "onnxruntime"
    requires = ("onnxruntime",)
    Options = OnnxRuntimeOptions

    def __init__(self, path, providers=None, threads: int | None = None, memory_arena: bool = True,
                 session_config: tuple = ()):
        self._open(Path(path), providers, threads, memory_arena, session_config)

    @classmethod
    def from_model(cls, model: bytes, name: str, **options) -> "OnnxRuntimeBackend":
        """A graph held in memory (serialised ModelProto bytes; `name` stands for its file in
        messages), opened with the same options as a file: what a check that edits graphs runs
        them through, so that it opens no session of its own."""
        backend = cls.__new__(cls)
        chosen = cls.make_options(**options)
        backend._open(model, chosen.providers, chosen.threads, chosen.memory_arena,
                      chosen.session_config, name)
        return backend

    def _open(self, source, providers, threads, memory_arena, session_config, name=None,
              before_session=None):
        """The session over a file or serialised graph; `providers`: names, or (name, options)
        pairs; `before_session(options)`: what a subclass adds to the session options."""
        ort = require("onnxruntime", "running ONNX graphs")
        self.path = Path(name) if name is not None else source
        options = ort.SessionOptions()
        for key, value in session_config:
            options.add_session_config_entry(key, value)
        if threads:
            options.intra_op_num_threads = threads
        # The CPU arena keeps the largest allocations for reuse (fast for repeated whole images);
        # without it one 512x512 gopro tile peaks at 1.72 GB instead of 2.11 GB (README).
        options.enable_cpu_mem_arena = memory_arena
        # ONNX Runtime's own log prints multi-line, coloured dumps of errors this backend already
        # reports in one line (a bad external-data file, say): only its fatal messages are shown.
        options.log_severity_level = ORT_LOG_FATAL
        available = ort.get_available_providers()
        if before_session is not None:
            before_session(options)
            wanted = list(providers or ())
        else:
            wanted = list(providers) if providers else [p for p in ORT_DEFAULT_PROVIDERS
                                                        if p in available]
        names = [p if isinstance(p, str) else p[0] for p in wanted]
        missing = [name for name in names if name not in available]
        if missing:
            raise HinetDeployError(f"onnxruntime here offers {', '.join(available)}, not "
                                   f"{', '.join(missing)}")
        if isinstance(source, Path):
            _check_external_data(source)
        try:
            self.session = ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                                options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise HinetDeployError(f"onnxruntime cannot load {self.path}: {first_line(exc)}") from exc
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        meta = from_properties(self.session.get_modelmeta().custom_metadata_map)
        self.limits = graph_limits(meta, dims)  # dynamic graphs take any batch and size

    @classmethod
    def check_runs(cls, models) -> list:
        return [(precision, graph, ()) for precision, graph in models.graphs.items()]

    def run_impl(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name],
                               {self.input_name: batch.astype(self.input_dtype, copy=False)})
        return out[0].astype(np.float32, copy=False)

    def close_impl(self) -> None:
        self.session = None
