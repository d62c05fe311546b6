"""OpenVINO INT8 (NNCF, float layers by measurement) against the CPU's float paths, side by side.

    python benchmarks/cpu_int8.py [--threads 2] [--rounds 9] [--no-gopro] [--json PATH]

Needs the `export`, `openvino` and `nncf` extras. In one process, for each model and size, the
contenders take turns in rotated rounds after one warm-up each (whole 1x3xHxW inputs, medians):

- onnxruntime:fp32 and openvino:fp32 on the FP32 graph, openvino:bf16 on it (where the CPU has
  BF16: the best float path);
- openvino:int8 as `hinet-deploy build --int8 --openvino` writes it: with the default float
  layers, and with `--float-layers auto` (the default target).

Models: the demo denoiser at 256x256 and 1280x720, and a gopro-width stand-in (HINet's official
deblurring width, random weights: its times are meaningful, its PSNR is not) at 256x256; the
stand-in's choice is measured on one 128x128 crop after a first pass over every layer (the choice
is still measured, its quality meaningless). For the demo model: each INT8 model's PSNR against
FP32 on the held-out crops (its sidecar) and its denoising gain on the three whole held-out
photographs against FP32's (through the Restorer in its default mode). Then where the time goes:
OpenVINO's per-layer counters at the largest size, by layer type. The acceptance line: INT8 with
auto float layers at least 1.3x BF16 everywhere, its gain within 0.1 dB of FP32's.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from hinet_deploy.build.calibration import AutoFloat, CalibOptions, MeasureOptions
from hinet_deploy.build.flow import GraphRequest, build_openvino, fp32_graph
from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo
from hinet_deploy.checks.timing import MachineLoad, alternated_rounds, device_name
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.backends import open_backend
from hinet_deploy.runtime.metrics import psnr

RATIO_TARGET = 1.3  # INT8 auto against BF16
GAIN_LOSS_LIMIT_DB = 0.1  # INT8 auto's denoising gain against FP32's


@dataclasses.dataclass
class Model:
    name: str
    ckpt: Path
    sizes: tuple  # (H, W)
    quality: bool  # real weights: fidelity is meaningful
    measure: MeasureOptions = dataclasses.field(default_factory=MeasureOptions)


def contenders(model: Model, work: Path, log) -> dict[str, tuple[Path, dict]]:
    """name -> (model file, backend options)."""
    req = GraphRequest(ckpt=model.ckpt, out_dir=work / model.name, precision="int8",
                       calib=CalibOptions(cache_dir=work / model.name / "calib-cache"))
    req.out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = fp32_graph(req)
    log(f"{model.name}: building OpenVINO INT8 (default float layers, then auto)")
    default, _ = build_openvino(req, None)
    auto_req = dataclasses.replace(req, calib=dataclasses.replace(
        req.calib, auto=AutoFloat(measure=model.measure)))
    auto, _ = build_openvino(auto_req, None)
    runs = {"onnxruntime:fp32": (fp32, {"backend": "onnxruntime"}),
            "openvino:fp32": (fp32, {"backend": "openvino", "precision": "fp32"})}
    from hinet_deploy.runtime.backends import BACKENDS

    if "bf16" in BACKENDS["openvino"].runnable_precisions():
        runs["openvino:bf16"] = (fp32, {"backend": "openvino", "precision": "bf16"})
    runs["openvino:int8 default"] = (default, {})
    runs["openvino:int8 auto"] = (auto, {})
    return runs


def sidecar(path: Path) -> dict:
    sidecar_path = path.with_name(path.name + ".json")
    return json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}


def time_size(runs, size, threads: int, rounds: int) -> dict[str, list[float]]:
    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    opened = {name: open_backend(path, threads=threads, **options)
              for name, (path, options) in runs.items()}
    try:
        for backend in opened.values():
            backend.run(x)  # warm-up, excluded
        return alternated_rounds({n: (lambda b=b: b.run(x)) for n, b in opened.items()}, rounds)
    finally:
        for backend in opened.values():
            backend.close()


def gains(runs) -> dict[str, float]:
    """Denoising gain (PSNR vs clean minus the noisy input's) on the held-out photographs."""
    clean = {n: load_photo(n) for n in HELD_OUT}
    noisy = {n: add_gaussian_noise(im, DEMO_NOISE_SIGMA, i) for i, (n, im) in enumerate(clean.items())}
    base = np.mean([psnr(noisy[n], clean[n]) for n in HELD_OUT])
    out = {}
    for name, (path, options) in runs.items():
        with Restorer(path, **options) as restore:
            out[name] = float(np.mean([psnr(restore(noisy[n]), clean[n]) for n in HELD_OUT]) - base)
    return out


def layer_types(path: Path, options: dict, size, threads: int) -> list[tuple[str, float]]:
    """OpenVINO's per-layer counters of one run, summed by layer type: [(type, share)]."""
    import openvino as ov

    from hinet_deploy.runtime.backends.openvino import PRECISIONS

    core = ov.Core()
    precision = options.get("precision") or sidecar(path).get("precision", "fp32")
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_PRECISION_HINT": PRECISIONS[precision], "INFERENCE_NUM_THREADS": threads,
        "PERF_COUNT": True})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    totals = collections.Counter()
    for _ in range(3):
        request.infer({0: x})
        for p in request.profiling_info:
            totals[p.node_type] += p.real_time.total_seconds()
    whole = sum(totals.values())
    return [(kind, seconds / whole) for kind, seconds in totals.most_common()]


def main() -> int:
    import os

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--no-gopro", action="store_true", help="the demo model alone")
    p.add_argument("--json", type=Path, default=Path("hinet-out/bench/cpu_int8.json"))
    args = p.parse_args()
    log = lambda message: print(message, flush=True)  # noqa: E731

    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    with tempfile.TemporaryDirectory(prefix="cpu-int8-") as tmp:
        work = Path(tmp)
        models = [Model("demo", DEMO_CHECKPOINT, ((256, 256), (720, 1280)), True)]
        if not args.no_gopro:
            from hinet_deploy.export.checkpoint import random_model, save_basicsr

            stand_in = work / "gopro-stand-in.pth"
            save_basicsr(random_model("gopro", 0).net.state_dict(), stand_in)
            models.append(Model("gopro-stand-in", stand_in, ((256, 256),), False,
                                MeasureOptions(count=1, crop=128, candidates=12)))
        report = {"device": device_name(), "threads": args.threads, "rounds": args.rounds,
                  "models": {}}
        load = MachineLoad()
        with load:
            for model in models:
                runs = contenders(model, work, log)
                entry = {"int8": {k: {f: sidecar(path).get(f) for f in (
                    "float_layers", "psnr_vs_fp32", "float_choice")}
                    for k, (path, _) in runs.items() if "int8" in k}, "sizes": {}}
                for size in model.sizes:
                    log(f"{model.name} {size[1]}x{size[0]}: {args.rounds} rotated rounds")
                    times = time_size(runs, size, args.threads, args.rounds)
                    entry["sizes"][f"{size[1]}x{size[0]}"] = times
                if model.quality:
                    entry["gains"] = gains(runs)
                    entry["layer_types"] = {name: layer_types(path, options, model.sizes[-1],
                                                              args.threads)
                                            for name, (path, options) in runs.items()
                                            if name in ("openvino:bf16", "openvino:int8 auto")}
                report["models"][model.name] = entry
        report["load"] = load.report()
    print(summary(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"json: {args.json}")
    return 0


def summary(report: dict) -> str:
    lines = [f"device: {report['device']}; {report['threads']} threads; median of "
             f"{report['rounds']} rotated rounds after one warm-up each", ""]
    verdict = []
    for name, entry in report["models"].items():
        for size, times in entry["sizes"].items():
            bf16 = statistics.median(times.get("openvino:bf16") or times["openvino:fp32"])
            lines += [f"{name} at {size}:", "| contender | median | spread (min-max) | vs BF16 |",
                      "|---|---|---|---|"]
            for contender, t in times.items():
                median = statistics.median(t)
                lines.append(f"| {contender} | {median * 1e3:.1f} ms | {min(t) * 1e3:.1f}-"
                             f"{max(t) * 1e3:.1f} ms | {bf16 / median:.2f}x |")
            verdict.append((name, size, bf16 / statistics.median(times["openvino:int8 auto"])))
            lines.append("")
        for contender, facts in entry["int8"].items():
            choice = facts.get("float_choice") or {}
            lines.append(f"{name} {contender}: {facts['psnr_vs_fp32']:.2f} dB from FP32 on the "
                         f"held-out crops; float layers: {', '.join(facts['float_layers'])}"
                         + (f" ({100 * choice['float_macs_share']:.1f} % of MACs)" if choice
                            else ""))
        if "gains" in entry:
            fp32 = entry["gains"]["onnxruntime:fp32"]
            lines.append(f"{name} denoising gain on the held-out photographs (FP32 {fp32:+.2f} "
                         f"dB): " + ", ".join(f"{k} {v - fp32:+.3f} dB" for k, v in
                                              entry["gains"].items() if k != "onnxruntime:fp32"))
        for contender, shares in entry.get("layer_types", {}).items():
            lines.append(f"{name} {contender}, time by layer type at "
                         f"{list(entry['sizes'])[-1]} (OpenVINO's counters): " +
                         ", ".join(f"{kind} {100 * share:.0f} %" for kind, share in shares[:7]))
        lines.append("")
    lines.append(report["load"])
    loss = {name: entry["gains"]["onnxruntime:fp32"] - entry["gains"]["openvino:int8 auto"]
            for name, entry in report["models"].items() if "gains" in entry}
    ok = all(r >= RATIO_TARGET for _, _, r in verdict) and \
        all(v <= GAIN_LOSS_LIMIT_DB for v in loss.values())
    lines.append(("PASS" if ok else "FAIL") + ": OpenVINO INT8 (auto float layers) against BF16: "
                 + ", ".join(f"{n} {s} {r:.2f}x" for n, s, r in verdict)
                 + f" (target {RATIO_TARGET}x); its gain against FP32's: "
                 + ", ".join(f"{n} {-v:+.3f} dB" for n, v in loss.items())
                 + f" (limit {GAIN_LOSS_LIMIT_DB} dB)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
