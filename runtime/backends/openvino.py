"""OpenVINO on the CPU: the same .onnx graphs as ONNX Runtime, at an explicit precision, and the
INT8 models `hinet-deploy build --int8 --openvino` writes (OpenVINO IR, .xml + .bin, with a
sidecar).

`fp32` (the default for a graph) is faithful to the graph. `bf16` runs the arithmetic in bfloat16
where the CPU has native BF16 (AVX-512 BF16, AMX): about twice ONNX Runtime's FP32 speed on such
CPUs, at 50-60 dB from the FP32 output (README: performance). OpenVINO picks BF16 by itself on such
CPUs (its INFERENCE_PRECISION_HINT); here it is never chosen silently, and refused where the CPU
lacks it. `int8` is a quantized model's own precision (its sidecar says so; a model holding
quantizers runs in INT8 whatever is asked, so nothing else is offered for it): its INT8
convolutions run in INT8, the layers it keeps in float in FP32 (measured here as fast as BF16 for
them, README: CPU). Compiled models are cached on disk (OpenVINO's CACHE_DIR, in the project's
cache folder), so a second process does not compile again; the graph's dynamic batch, height and
width stay dynamic.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.files import cache_dir, not_regular
from hinet_deploy.common.untrusted import read_json
from hinet_deploy.engines.sidecar import sidecar_path
from hinet_deploy.common.lazy import require
from hinet_deploy.export.metadata import OUTPUT_NAME, PREFIX, graph_limits
from hinet_deploy.runtime.backends.base import BackendBase, option

# ours -> OpenVINO's INFERENCE_PRECISION_HINT (for int8: the precision of the layers left in float)
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
DEVICE = "CPU"
INT8_MODEL = "openvino:int8"  # its key among ModelFiles.built
QUANTIZER_OPS = ("FakeQuantize",)  # what OpenVINO makes of Q/DQ pairs when it reads a graph


def read_model_sidecar(path) -> dict:
    """The sidecar's facts (MODEL.xml.json, as for engines), or {} where the model has none; one
    that is no regular file, too large or no JSON object is one line, never read past its bound."""
    side = sidecar_path(path)
    if not os.path.lexists(side):
        return {}
    facts = read_json(side, "model sidecar")
    if not isinstance(facts, dict):
        raise HinetDeployError(f"model sidecar {side} does not hold an object: rebuild the model")
    return facts


def _check_files(path: Path) -> None:
    """Every file OpenVINO would read for the model is a regular file (a FIFO in their place
    would block it forever), the weights of an IR included."""
    for part in OpenVinoBackend.model_files(path)[:2]:
        problem = not_regular(part)
        if problem is not None:
            what = "weights" if part.suffix.lower() == ".bin" else "model"
            raise HinetDeployError(f"{what} {part} {problem}")


def native_precisions(core, device: str = DEVICE) -> set[str]:
    """The precisions the device computes natively (its OPTIMIZATION_CAPABILITIES)."""
    return {str(c).lower() for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")}


@dataclass(frozen=True)
class OpenVinoOptions:
    precision: str | None = option(None, "OpenVINO's precision: fp32, bf16 (CPUs with native "
                                         "BF16) or int8 (a model from `build --int8 --openvino`); "
                                         "default: the model's own (its sidecar), else fp32")
    threads: int | None = option(None, "CPU threads (default: all)", threads=True)


class OpenVinoBackend(BackendBase):
    name = "openvino"
    suffixes = (".onnx", ".xml")
    extra = "openvino"
    requires = ("openvino",)
    Options = OpenVinoOptions

    @classmethod
    def runnable_precisions(cls) -> list[str]:
        """The precisions that run here on an FP32 graph: none without OpenVINO, bf16 only on
        CPUs with it."""
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            return []
        import openvino

        return ["fp32"] + (["bf16"] if "bf16" in native_precisions(openvino.Core()) else [])

    @classmethod
    def check_runs(cls, models) -> list:
        graph = models.graphs.get("fp32")  # OpenVINO runs the FP32 graph at its own precision
        runs = [] if graph is None else [(precision, graph, (("precision", precision),))
                                         for precision in cls.runnable_precisions()]
        int8 = models.built.get(INT8_MODEL)
        if int8 is not None and cls.runnable_precisions():
            runs.append(("int8", int8, (("precision", "int8"),)))
        return runs

    @classmethod
    def model_files(cls, path: Path) -> list[Path]:
        """The model, its weights (.bin beside an .xml) and its sidecar where it has one."""
        path = Path(path)
        files = [path] + ([path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else [])
        return files + [side for side in (sidecar_path(path),) if os.path.lexists(side)]

    @classmethod
    def from_model(cls, model, name: str, **options) -> "OpenVinoBackend":
        """A model held in memory, an openvino.Model or a serialised ONNX graph (`name` stands for
        its file in messages), compiled without the on-disk cache: what a check that edits models
        runs them through."""
        backend = cls.__new__(cls)
        chosen = cls.make_options(**options)
        backend._open(model, Path(name), chosen.precision, chosen.threads, {}, cache=False)
        return backend

    def __init__(self, path, precision: str | None = None, threads: int | None = None):
        _check_files(Path(path))
        self._open(str(path), Path(path), precision, threads, read_model_sidecar(path))

    def _open(self, source, path: Path, precision, threads, sidecar: dict, cache: bool = True):
        ov = require("openvino", "running graphs with OpenVINO")
        self.path = path
        core = ov.Core()
        try:
            model = core.read_model(source) if isinstance(source, (str, bytes)) else source
        except Exception as exc:  # OpenVINO raises RuntimeError for bad files
            raise HinetDeployError(f"OpenVINO cannot load {self.path}: {first_line(exc)}") from exc
        quantized = any(op.get_type_name() in QUANTIZER_OPS for op in model.get_ops())
        self.precision = precision = self._precision(precision, quantized, sidecar, core)
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
        if cache:
            config["CACHE_DIR"] = str(cache_dir() / "openvino")
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, DEVICE, config)
        except Exception as exc:
            raise HinetDeployError(f"OpenVINO cannot compile {self.path}: {first_line(exc)}") \
                from exc
        info = model.get_rt_info()  # the ONNX graph's metadata_props, under "framework"
        framework = info["framework"] if "framework" in list(info.keys()) else {}
        meta = {k[len(PREFIX):]: framework[k].astype(str) for k in framework
                if k.startswith(PREFIX)}
        shape = model.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        self.limits = graph_limits(meta, dims)
        outputs = [o for o in self.compiled.outputs if OUTPUT_NAME in o.get_names()]
        self.output = outputs[0] if outputs else self.compiled.outputs[0]
        self.request = self.compiled.create_infer_request()

    def _precision(self, asked: str | None, quantized: bool, sidecar: dict, core) -> str:
        """The precision to run at: the one asked for where the model can run at it, else the
        model's own; every refusal names what would run."""
        own = sidecar.get("precision") or ("int8" if quantized else None)
        if asked is not None and asked not in PRECISIONS:
            raise HinetDeployError(f"OpenVINO precision {asked!r}: choose {', '.join(PRECISIONS)}")
        if quantized and asked not in (None, "int8"):
            raise HinetDeployError(f"{self.path.name} holds INT8 layers (quantizers): OpenVINO "
                                   f"runs it in int8, not {asked}; run its FP32 graph for {asked}")
        if asked == "int8" and not quantized:
            raise HinetDeployError(f"{self.path.name} holds no INT8 layers: make an INT8 model "
                                   f"with `hinet-deploy build --int8 --openvino`")
        precision = asked or own or "fp32"
        if precision == "bf16" and "bf16" not in native_precisions(core):
            raise HinetDeployError("this CPU has no native BF16 (OpenVINO lists "
                                   f"{', '.join(sorted(native_precisions(core)))}): use "
                                   "--precision fp32, or a CPU with AVX-512 BF16 or AMX")
        return precision

    @classmethod
    def layer_seconds(cls, model, batch: np.ndarray, runs: int = 3) -> dict[str, float]:
        """Seconds per layer of the compiled model (OpenVINO's per-layer counters: its own layer
        names, fused and inserted layers included), averaged over `runs` after a warm-up, with the
        options an INT8 model runs with."""
        ov = require("openvino", "running graphs with OpenVINO")
        compiled = ov.Core().compile_model(model, DEVICE, {
            "INFERENCE_PRECISION_HINT": PRECISIONS["int8"], "PERF_COUNT": True})
        request = compiled.create_infer_request()
        request.infer({0: batch})
        seconds: dict[str, float] = collections.Counter()
        for _ in range(runs):
            request.infer({0: batch})
            for info in request.profiling_info:
                seconds[info.node_name] += info.real_time.total_seconds() / runs
        return dict(seconds)

    def runtime_precisions(self) -> dict[str, int]:
        """How many convolutions run at each precision in the compiled model (OpenVINO's runtime
        graph: u8/i8 for INT8, bf16, f32)."""
        return dict(collections.Counter(info["runtimePrecision"].astype(str)
                                        for info in self._conv_infos()))

    def kernels(self) -> dict[str, int]:
        """The convolution kernels OpenVINO chose, by name (it names the instruction set:
        `brgconv_avx512_amx_I8`, `jit_avx2_I8`, ...), with how many layers run each."""
        return dict(collections.Counter(info["primitiveType"].astype(str)
                                        for info in self._conv_infos()))

    def _conv_infos(self):
        runtime = self.compiled.get_runtime_model()
        infos = [op.get_rt_info() for op in runtime.get_ordered_ops()]
        return [info for info in infos if info["layerType"].astype(str) in
                ("Convolution", "Deconvolution")]

    def run_impl(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(result[self.output], dtype=np.float32)

    def close_impl(self) -> None:
        self.request = self.compiled = None
