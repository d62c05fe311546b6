"""What INT8 costs each layer, measured: the PSNR against FP32 of the calibrated INT8 graph with one
layer at a time kept in float, and a greedy choice of float layers by dB recovered per float MAC.

Two targets, each measured on what it ships: `tensorrt` (onnxruntime's static quantizer, the Q/DQ
recipe of export.precision, run as written in ONNX Runtime) and `openvino` (NNCF's quantizer, run in
OpenVINO INT8: build.openvino_int8). Calibration runs once (its result is the build's own cache);
trying a layer in float is a graph edit on the calibrated Q/DQ graph (`export.precision.
FloatSwitches`), so every number is the one of the model a build writes with those float layers.
Measurements are cached by target, graph, calibration and measurement crops: a second build with
the same images reuses them.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hinet_deploy.build.calibration import (DEFAULT_TARGET_DB, AutoFloat, CalibOptions, ImageSet,
                                            MeasureOptions, calibration_cache, calibration_crops,
                                            calibration_images, check_apart, measurement_images)
from hinet_deploy.build.nncf_model import OPENVINO_TARGET_DB, recipe
from hinet_deploy.common.files import atomic_path, file_sha256
from hinet_deploy.common.progress import progress_bar, say
from hinet_deploy.runtime.backends import BACKENDS
from hinet_deploy.runtime.metrics import psnr

CACHE_SCHEMA = "1"
# The INT8 targets, each with the automatic choice's default PSNR target against FP32.
TARGETS = {"tensorrt": DEFAULT_TARGET_DB, "openvino": OPENVINO_TARGET_DB}


@dataclass
class LayerCost:
    layer: str
    op: str
    macs: int  # exact, at the measurement crop size
    psnr: float  # INT8 with this layer alone in float, against FP32 (mean over crops)
    worst_psnr: float
    gain: float  # dB recovered over all-INT8
    screened_out: bool = False  # measured by the first pass only (--candidates)


@dataclass
class Choice:
    layers: tuple[str, ...]
    psnr: float
    worst_psnr: float
    int8_psnr: float
    float_macs: int
    total_macs: int
    target_db: float | None
    macs_budget: float | None
    measured_on: str  # the measurement images, none of them a calibration image
    steps: list[tuple[str, float]] = field(default_factory=list)  # (layer added, PSNR after)

    @property
    def share(self) -> float:
        return self.float_macs / self.total_macs

    @property
    def reached(self) -> bool:
        return self.target_db is None or self.psnr >= self.target_db

    def summary(self) -> str:
        aim = []
        if self.target_db is not None:
            aim.append(f"target {self.target_db:g} dB" + ("" if self.reached else " NOT reached"))
        if self.macs_budget is not None:
            aim.append(f"budget {100 * self.macs_budget:.1f} % of MACs")
        return (f"float layers chosen by measurement ({'; '.join(aim)}): "
                f"{', '.join(self.layers) or 'none'}; INT8 vs FP32 {self.int8_psnr:.2f} -> "
                f"{self.psnr:.2f} dB (worst crop {self.worst_psnr:.2f}), "
                f"{100 * self.share:.1f} % of MACs in float")

    def facts(self) -> dict:
        return {"layers": list(self.layers), "psnr_vs_fp32": self.psnr,
                "worst_psnr_vs_fp32": self.worst_psnr, "int8_psnr_vs_fp32": self.int8_psnr,
                "float_macs_share": round(self.share, 5), "target_db": self.target_db,
                "macs_budget": self.macs_budget, "reached": self.reached,
                "measured_on": self.measured_on}


@dataclass
class Report:
    graph: str
    graph_sha256: str
    calibration: dict  # method, images, crops
    measurement: dict  # images, crops, crop size
    total_macs: int
    int8_psnr: float
    int8_worst_psnr: float
    layers: list[LayerCost]  # ranked: most dB recovered first
    seconds: float  # what the measurement took when it ran (calibration included)
    cached: bool  # everything came from the cache this time
    # OpenVINO: the seconds each layer adds in float (what the choice ranks by, with the dB)
    float_seconds: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _set_key(layers) -> str:
    return " ".join(sorted(layers))


class Sensitivity:
    """The measurement of one FP32 graph under one calibration, on one set of measurement crops."""

    def __init__(self, fp32: Path, calib: CalibOptions, measure: MeasureOptions | None = None,
                 log=say, calib_images: ImageSet | None = None, target: str = "tensorrt"):
        if target not in TARGETS:
            raise ValueError(f"unknown INT8 target {target!r}")
        self.fp32, self.calib, self.log, self.target = Path(fp32), calib, log, target
        self.measure = measure or (calib.auto.measure if calib.auto else MeasureOptions())
        self.calib_images = calib_images or calibration_images(calib)
        self._calib_crops = calibration_crops(calib, self.calib_images)
        self.measure_images = measurement_images(self.measure)
        check_apart(self.calib_images, self.measure_images)
        self.graph_sha256 = file_sha256(self.fp32)
        self._crops = self._make_crops(self.measure.count, self.measure.crop)
        self._cache_path = Path(calib.cache_dir) / f"sensitivity-{self._cache_key()}.json"
        self._cache = self._read_cache()
        self._runner = None
        self._macs = None

    def _make_crops(self, count: int, crop: int):
        from hinet_deploy.calib.data import make_crops

        return make_crops(self.measure_images.images, crop, count, "random", self.measure.seed,
                          log=self.log)

    def _cache_key(self) -> str:
        m = self.measure
        method = self.calib.method if self.target == "tensorrt" else f"openvino-{recipe()}"
        text = json.dumps([self.graph_sha256, method, self._calib_crops.fingerprint(),
                           self._crops.fingerprint(), m.candidates, m.screen_crop])
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def _read_cache(self) -> dict:
        try:
            data = json.loads(self._cache_path.read_text())
        except (OSError, ValueError):
            return {"schema": CACHE_SCHEMA, "sets": {}, "screen": {}}
        if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA or \
                not isinstance(data.get("sets"), dict):
            return {"schema": CACHE_SCHEMA, "sets": {}, "screen": {}}
        return data

    def _write_cache(self) -> None:
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._cache_path) as tmp:
            tmp.write_text(json.dumps(self._cache) + "\n")

    # --- measuring -------------------------------------------------------------------------------
    def runner(self) -> "_Runner":
        if self._runner is None:
            runner = {"tensorrt": _Runner, "openvino": _OpenVinoRunner}[self.target]
            self._runner = runner(self.fp32, self.graph_sha256, self.calib, self._calib_crops,
                                  self._crops, self.log)
        return self._runner

    def psnr(self, layers) -> tuple[float, float]:
        """(mean, worst) PSNR against FP32 over the crops, of the INT8 graph with `layers` in float."""
        key = _set_key(layers)
        if key not in self._cache["sets"]:
            self._cache["sets"][key] = list(self.runner().psnr(layers, self.runner().crops))
        mean, worst = self._cache["sets"][key]
        return float(mean), float(worst)

    def layer_macs(self) -> tuple[dict[str, tuple[str, int]], int]:
        """{layer: (op, MACs at the crop size)} for every INT8 convolution, and the network's MACs."""
        if self._macs is None:
            if "macs" in self._cache:
                self._macs = ({k: tuple(v) for k, v in self._cache["macs"]["layers"].items()},
                              int(self._cache["macs"]["total"]))
            else:
                self._macs = self.runner().layer_macs(self.measure.crop)
                self._cache["macs"] = {"layers": self._macs[0], "total": self._macs[1]}
        return self._macs

    def float_costs(self) -> dict[str, float]:
        """What keeping each layer in float costs in the choice's ranking: its MACs for TensorRT;
        for OpenVINO the seconds it adds, measured with OpenVINO's per-layer counters (the layer
        with its reorders and quantizers, all layers in float against all INT8, at the measurement
        crop): a thin full-resolution convolution costs far more time than its MACs say."""
        if self.target == "tensorrt":
            return {layer: float(macs) for layer, (_, macs) in self.layer_macs()[0].items()}
        if "float_seconds" not in self._cache:
            self._cache["float_seconds"] = self.runner().float_seconds(self.measure.crop)
        return self._cache["float_seconds"]

    def report(self) -> Report:
        """Every INT8 convolution alone in float, ranked by the dB it recovers."""
        start = time.monotonic()
        macs, total = self.layer_macs()
        layers = list(macs)
        candidates = self._screen(layers) if self.measure.candidates else layers
        base = self.psnr(())
        todo = [layer for layer in candidates if _set_key([layer]) not in self._cache["sets"]]
        bar = progress_bar(len(todo), "measuring layers", "layer", quiet=not todo)
        costs = []
        for layer in layers:
            if layer in candidates:
                mean, worst = self.psnr([layer])
                if layer in todo:
                    bar.update(1)
                costs.append(LayerCost(layer, macs[layer][0], macs[layer][1], mean, worst,
                                       mean - base[0]))
            else:
                mean, worst = self._cache["screen"][layer]
                costs.append(LayerCost(layer, macs[layer][0], macs[layer][1], mean, worst,
                                       mean - self._cache["screen"][""][0], screened_out=True))
        bar.close()
        seconds = self.float_costs() if self.target == "openvino" else None
        cached = self._runner is None
        self._cache["seconds"] = self._cache.get("seconds", 0.0) + time.monotonic() - start
        self._write_cache()
        costs.sort(key=lambda c: (c.screened_out, -c.gain))
        return Report(str(self.fp32), self.graph_sha256, self._calibration_facts(),
                      self._measurement_facts(), total, base[0], base[1], costs,
                      self._cache["seconds"], cached, seconds)

    def _screen(self, layers: list[str]) -> set[str]:
        """The `candidates` layers that recover most on one small crop (a cheap first pass)."""
        screen = self._cache.setdefault("screen", {})
        todo = [layer for layer in [""] + layers if layer not in screen]
        if todo:
            crops = self._make_crops(1, self.measure.screen_crop).crops
            bar = progress_bar(len(todo), "first pass", "layer")
            for layer in todo:
                screen[layer] = list(self.runner().psnr([layer] if layer else [], crops))
                bar.update(1)
            bar.close()
            self._write_cache()
        ranked = sorted(layers, key=lambda layer: -screen[layer][0])
        return set(ranked[:self.measure.candidates])

    def _calibration_facts(self) -> dict:
        method = self.calib.method if self.target == "tensorrt" else "nncf"
        return {"target": self.target, "method": method,
                "images": self.calib_images.description,
                "names": sorted(self.calib_images.images), "crops": self.calib.count,
                "crop": self.calib.crop}

    def _measurement_facts(self) -> dict:
        m = self.measure
        return {"images": self.measure_images.description,
                "names": sorted(self.measure_images.images), "crops": len(self._crops.crops),
                "crop": m.crop, "first_pass": ({"candidates": m.candidates, "crop": m.screen_crop}
                                               if m.candidates else None)}

    def modules(self, prefixes) -> list[str]:
        """The measured layers inside the given modules (`sam12` is its three convs)."""
        macs, _ = self.layer_macs()
        return [layer for layer in macs
                if any(layer == p or layer.startswith(p + ".") for p in prefixes)]

    def listed(self, prefixes) -> Choice:
        """A hand-written list of float layers, measured like a choice."""
        report = self.report()
        layers = tuple(self.modules(prefixes))
        mean, worst = self.psnr(layers)
        used = sum(c.macs for c in report.layers if c.layer in layers)
        self._write_cache()
        return Choice(layers, mean, worst, report.int8_psnr, used, report.total_macs, None, None,
                      self.measure_images.description)

    # --- choosing --------------------------------------------------------------------------------
    def choose(self, auto: AutoFloat) -> Choice:
        """Float layers added greedily by dB recovered per float cost (MACs; OpenVINO: measured
        seconds, `float_costs`), each gain re-measured with the layers already chosen (gains do not
        add up), until the target PSNR or the MAC budget."""
        report = self.report()
        target, budget = auto.target(TARGETS[self.target]), auto.macs_budget
        macs = {c.layer: c.macs for c in report.layers}
        costs = self.float_costs()
        floor = max(min(costs.values()), 0.0) * 0.1 or 1e-9  # a layer that costs nothing measurable
        estimate = {c.layer: (c.gain, ()) for c in report.layers if c.gain > 0 and not c.screened_out}
        chosen: list[str] = []
        current, worst = report.int8_psnr, report.int8_worst_psnr
        used, steps = 0, []
        while target is None or current < target:
            fits = [layer for layer in estimate
                    if budget is None or used + macs[layer] <= budget * report.total_macs]
            if not fits:
                break
            best = max(fits, key=lambda layer: estimate[layer][0] / max(costs[layer], floor))
            gain, measured_with = estimate[best]
            if measured_with != tuple(chosen):  # stale: re-measure with the layers chosen so far
                mean, _ = self.psnr(chosen + [best])
                estimate[best] = (mean - current, tuple(chosen))
                continue
            del estimate[best]
            if gain <= 0:
                continue
            chosen.append(best)
            used += macs[best]
            current, worst = self.psnr(chosen)
            steps.append((best, current))
        self._write_cache()
        return Choice(tuple(chosen), current, worst, report.int8_psnr, used, report.total_macs,
                      target, budget, self.measure_images.description, steps)


class _Runner:
    """The calibrated all-INT8 graph, its float switches and the FP32 outputs of the crops."""

    def __init__(self, fp32: Path, graph_sha256: str, calib: CalibOptions, calib_crops, crops, log):
        import onnx

        self.fp32_model = onnx.load(str(fp32))
        self.switches = self.make_switches(fp32, graph_sha256, calib, calib_crops, log)
        self.crops = crops.crops
        self._references: dict[str, np.ndarray] = {}
        self._fp32 = _Runner.session(self.fp32_model)  # the reference: FP32 in ONNX Runtime

    def make_switches(self, fp32: Path, graph_sha256: str, calib: CalibOptions, calib_crops, log):
        """The calibrated graph with every convolution INT8, as float switches."""
        import onnx

        from hinet_deploy.calib.data import CalibrationReader
        from hinet_deploy.export.precision import FloatSwitches, to_int8

        cache = calibration_cache(calib, graph_sha256, calib_crops.fingerprint())
        with tempfile.TemporaryDirectory(prefix="hinet-sensitivity-") as tmp:
            qdq = Path(tmp) / "all-int8.onnx"
            facts = to_int8(fp32, qdq, CalibrationReader(calib_crops), method=calib.method,
                            float_layers=(), cache_path=cache)
            if facts["calibration_cache_hit"]:
                log(f"calibration ranges reused from {cache}")
            return FloatSwitches(onnx.load(str(qdq)), self.fp32_model)

    @staticmethod
    def session(model):
        """The graph through the ONNX Runtime backend (the runtime's own checks on its output).
        The Q/DQ pairs run as written (quantize, dequantize, float convolution) instead of being
        fused into ONNX Runtime's integer kernels: the Q/DQ graph's own arithmetic, the one
        TensorRT implements, and faster here (0.13 s against 0.16 s a demo crop of 256)."""
        return BACKENDS["onnxruntime"].from_model(
            model.SerializeToString(), "sensitivity.onnx", providers=("CPUExecutionProvider",),
            session_config=(("session.disable_quant_qdq", "1"),))

    def reference(self, crop: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(crop.tobytes()).hexdigest()
        if key not in self._references:
            self._references[key] = _output(self._fp32, crop)
        return self._references[key]

    def switched(self, layers):
        """The INT8 graph with `layers` in float, opened as it is measured."""
        with self.switches.floated(list(layers)) as model:
            return self.session(model)

    def psnr(self, layers, crops) -> tuple[float, float]:
        session = self.switched(layers)
        values = [psnr(_output(session, crop), self.reference(crop)) for crop in crops]
        session.close()
        return float(np.mean(values)), float(min(values))

    def layer_macs(self, crop: int) -> tuple[dict[str, tuple[str, int]], int]:
        from hinet_deploy.export.macs import node_macs

        by_node = node_macs(self.fp32_model, crop, crop)
        layers = {layer: (node.op_type, by_node[node.name])
                  for layer, node in self.switches.nodes.items()}
        return layers, sum(by_node.values())


class _OpenVinoRunner(_Runner):
    """NNCF's all-INT8 model, its float switches, each switched model run in OpenVINO INT8."""

    def float_seconds(self, crop: int, runs: int = 3) -> dict[str, float]:
        """{layer: seconds it adds in float} from OpenVINO's per-layer counters: all layers in
        float against all INT8 on a crop, each layer with the entries OpenVINO names after it
        (its reorders and output quantizer)."""
        x = np.random.default_rng(0).random((1, 3, crop, crop), dtype=np.float32)
        layers = self.switches.layers
        names = {layer: self.switches.nodes[layer].name for layer in layers}
        times = []
        for model in (self.switches.floated([]), self.switches.floated(layers)):
            seconds = dict.fromkeys(layers, 0.0)
            for name, spent in BACKENDS["openvino"].layer_seconds(model, x, runs).items():
                for layer, node in names.items():
                    if name == node or name.endswith(f"_{node}") or f"{node}/" in name:
                        seconds[layer] += spent
            times.append(seconds)
        return {layer: times[1][layer] - times[0][layer] for layer in layers}

    def make_switches(self, fp32: Path, graph_sha256: str, calib: CalibOptions, calib_crops, log):
        from hinet_deploy.build.nncf_model import openvino_switches

        return openvino_switches(fp32, graph_sha256, calib_crops, self.fp32_model, log)

    def switched(self, layers):
        return BACKENDS["openvino"].from_model(self.switches.floated(list(layers)),
                                               "sensitivity.xml", precision="int8")


def _output(backend, crop: np.ndarray) -> np.ndarray:
    return np.clip(backend.run(crop[None]), 0.0, 1.0)


def format_report(report: Report, top: int | None = None) -> str:
    """The ranked Markdown table, with where the numbers came from."""
    cal, mea = report.calibration, report.measurement
    lines = [f"graph: {report.graph} (sha256 {report.graph_sha256[:12]}); INT8 for "
             f"{cal.get('target', 'tensorrt')}",
             f"calibration: {cal['method']}, {cal['crops']} crops of {cal['crop']} from "
             f"{cal['images']}",
             f"measurement: {mea['crops']} crops of {mea['crop']} from {mea['images']} "
             f"(none of them a calibration image)",
             f"all-INT8 against FP32: {report.int8_psnr:.2f} dB (worst crop "
             f"{report.int8_worst_psnr:.2f}); network {report.total_macs / 1e9:.2f} GMACs at "
             f"{mea['crop']}x{mea['crop']}; measured in {report.seconds:.0f} s"
             + (" (reused from the cache)" if report.cached else ""), "",
             "| rank | layer | op | GMACs (share) | PSNR vs FP32, layer in float | dB recovered "
             "| dB per float GMAC |", "|---|---|---|---|---|---|---|"]
    shown = report.layers[:top] if top else report.layers
    for rank, c in enumerate(shown, 1):
        note = " (first pass)" if c.screened_out else ""
        lines.append(f"| {rank} | {c.layer} | {c.op} | {c.macs / 1e9:.3f} "
                     f"({100 * c.macs / report.total_macs:.2f} %) | {c.psnr:.2f}{note} | "
                     f"{c.gain:+.2f} | {c.gain / max(c.macs / 1e9, 1e-9):+.1f} |")
    if top and len(report.layers) > top:
        lines.append(f"| | ({len(report.layers) - top} more in the JSON) | | | | | |")
    return "\n".join(lines)


def report_data(report: Report, choice: Choice | None = None) -> dict:
    """What the JSON holds: the ranking, and the choice with its steps where one was made."""
    data = report.as_dict()
    if choice is not None:
        data["choice"] = choice.facts() | {"steps": choice.steps}
    return data
