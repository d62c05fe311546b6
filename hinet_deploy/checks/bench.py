"""`hinet-deploy bench`: latency and throughput per backend and precision, measured side by side.

At each size and batch every contender runs once to warm up (excluded), then the contenders take
turns in alternated rounds (checks.timing). Reported:
median and p90 latency, images per second, speed-up over PyTorch FP32 eager on the same device,
the MACs of one image (exact and paper convention), and each contender's peak memory.

It fits the machine it runs on: sizes go smallest first, and a contender whose memory at the last
size, scaled by pixels, says the next would not fit in the memory available is not run there (a
not-run row says how much it would need).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from hinet_deploy.export.macs import count_macs
from hinet_deploy.export.metadata import read_metadata
from hinet_deploy.checks.report import write_report
from hinet_deploy.common.progress import say
from hinet_deploy.common.memory import PeakMemory, available_bytes, estimated_run_bytes
from hinet_deploy.build.flow import GraphRequest, engines_for_checks
from hinet_deploy.checks.contenders import BASELINE, contenders
from hinet_deploy.checks.timing import alternated_rounds, device_name
from hinet_deploy.common.limits import HINET_SIZE_MULTIPLE
from hinet_deploy.runtime.backends import backend_class, open_backend
from hinet_deploy.runtime.tiling import round_up

DEFAULT_SIZES = ((256, 256), (720, 1280), (1080, 1920))  # (H, W)
# GPU-only contenders; listed as not run where there is no CUDA device.
GPU_ONLY = [{"contender": "pytorch:fp16", "backend": "pytorch", "precision": "fp16",
             "reason": "needs a CUDA device (channels-last)"}]


MEMORY_SHARE = 0.8  # of the memory available when a size starts: room left for the rest of the system


class MemoryFit:
    """Predicts a contender's working memory at a size, and says when it would not fit: the larger
    of a prior from the network's width and what the contender used at the last size scaled by
    pixels (memory grows with pixels: activations dominate). Small runs reuse memory allocators
    keep, so a measurement alone can say almost nothing; the prior never does."""

    def __init__(self, wf: int):
        self.wf = wf
        self.mb_per_pixel: dict = {}

    def refusal(self, key, pixels: int) -> str | None:
        available = available_bytes()
        if available is None:
            return None
        need_mb = max(self.mb_per_pixel.get(key, 0.0) * pixels,
                      estimated_run_bytes(self.wf, pixels) / 2**20)
        budget_mb = available / 2**20 * MEMORY_SHARE
        if need_mb <= budget_mb:
            return None
        return (f"would need about {need_mb / 1024:.1f} GB "
                f"{available / 2**30:.1f} GB available")

    def record(self, key, pixels: int, added_mb: float) -> None:
        if added_mb == added_mb and added_mb > 0:  # not NaN
            self.mb_per_pixel[key] = added_mb / pixels


def _backends(ckpt: Path, req: GraphRequest, threads: int | None, engines) -> dict:
    """(backend, precision) -> the open backend, each held to `threads` CPU threads."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    opened = {}
    for c in contenders(ckpt, req, engines):
        options = backend_class(c.model, c.backend).worker_options(threads) if threads else {}
        opened[c.key] = open_backend(c.model, c.backend, **dict(c.options), **options)
    return opened


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench(ckpt: Path, req: GraphRequest, sizes=DEFAULT_SIZES, batches=(1,), repeats: int = 5,
          threads: int | None = None, log=say) -> dict:
    import onnx

    def padded(side: int) -> int:  # what the Restorer pads to
        return round_up(side, HINET_SIZE_MULTIPLE)

    largest = max(padded(h) for h, _ in sizes), max(padded(w) for _, w in sizes)
    engines, unavailable = engines_for_checks(req, (max(batches), *largest), log)
    backends = _backends(ckpt, req, threads, engines)
    fp32_graph = onnx.load(str(backends[("onnxruntime", "fp32")].path))
    wf = json.loads(read_metadata(fp32_graph)["config"])["wf"]
    rows, not_run, rng, fit = [], [], np.random.default_rng(0), MemoryFit(wf)
    for height, width in sorted(sizes, key=lambda s: s[0] * s[1]):
        ph, pw = padded(height), padded(width)
        macs = count_macs(fp32_graph, ph, pw)
        for batch in sorted(batches):
            x = rng.random((batch, 3, ph, pw), dtype=np.float32)
            memory, keys = {}, []
            for key, backend in backends.items():
                reason = fit.refusal(key, x[:, 0].size)
                if reason:
                    not_run.append({"contender": ":".join(key), "backend": key[0],
                                    "precision": key[1], "height": height,
                                    "width": width, "batch": batch, "reason": reason})
                    log(f"{width}x{height} batch {batch}: {key[0]} {key[1]} not run: {reason}")
                    continue
                with PeakMemory() as memory[key]:
                    backend.run(x)  # warm-up, excluded from the times
                fit.record(key, x[:, 0].size, memory[key].added_mb)
                keys.append(key)
            if not keys:
                continue
            times = alternated_rounds(
                {key: (lambda b=backends[key]: b.run(x)) for key in keys}, repeats,
                lambda r: log(f"{width}x{height} batch {batch}: round {r}/{repeats}"))
            base = statistics.median(times[BASELINE]) if BASELINE in times else float("nan")
            for key, t in times.items():
                median = statistics.median(t)
                rows.append({"contender": ":".join(key), "backend": key[0],
                             "precision": key[1], "height": height,
                             "width": width, "padded": [ph, pw], "batch": batch,
                             "median_s": median, "p90_s": _percentile(t, 90),
                             "images_per_s": batch / median, "speedup_vs_pytorch_fp32": base / median,
                             "macs_per_image": macs.macs, "macs_paper_per_image": macs.macs_paper,
                             "peak_rss_mb": memory[key].peak_mb,
                             "run_memory_mb": memory[key].added_mb, "times_s": t})
    # The kernels a backend chose name the instruction sets it runs on (OpenVINO's
    # `brgconv_avx512_amx_I8`: AVX-512 with AMX, INT8), where it says.
    kernels = {":".join(key): backend.kernels() for key, backend in backends.items()
               if callable(getattr(backend, "kernels", None))}
    for backend in backends.values():
        backend.close()
    return {"checkpoint": str(ckpt), "device": device_name(), "threads": threads,
            "kernels": kernels,
            "repeats": repeats, "warmup_runs": 1, "order": "alternating rounds",
            "memory": "peak_rss_mb: the process's peak resident memory during the contender's "
                      "warm-up run (all models loaded); run_memory_mb: the part that run added",
            "rows": rows, "not_run": not_run,
            "unavailable": unavailable + [{**row, "reason": row["reason"] if not _has_cuda() else
                                           "not measured by bench yet"} for row in GPU_ONLY]}


def markdown(report: dict) -> str:
    lines = [f"device: {report['device']}; {report['threads'] or 'default'} threads; median of "
             f"{report['repeats']} alternating rounds after one warm-up; memory: peak resident "
             f"memory of the process during the contender's run (what the run added)", "",
             "| size | batch | contender | median | p90 | images/s | vs PyTorch FP32 | "
             "G MACs / image (exact / paper) | peak memory |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['width']}x{r['height']} | {r['batch']} | "
                     f"{r['backend']}:{r['precision']} | {r['median_s']:.3f} s | {r['p90_s']:.3f} s | "
                     f"{r['images_per_s']:.2f} | {r['speedup_vs_pytorch_fp32']:.2f}x | "
                     f"{r['macs_per_image'] / 1e9:.1f} / {r['macs_paper_per_image'] / 1e9:.1f} | "
                     f"{r['peak_rss_mb']:.0f} MB (+{r['run_memory_mb']:.0f}) |")
    for r in report["not_run"]:
        lines.append(f"| {r['width']}x{r['height']} | {r['batch']} | "
                     f"{r['backend']}:{r['precision']} | not run: {r['reason']} | | | | | |")
    for r in report["unavailable"]:
        lines.append(f"| all | | {r['backend']}:{r['precision']} | not run: {r['reason']} "
                     f"| | | | | |")
    if report.get("kernels"):
        lines += ["", "convolution kernels (they name the instruction sets used):"]
        lines += [f"- {name}: " + ", ".join(f"{kernel} x{count}" for kernel, count in
                                            sorted(used.items(), key=lambda kv: -kv[1]))
                  for name, used in report["kernels"].items()]
    return "\n".join(lines)


def write_outputs(report: dict, json_path: Path) -> Path:
    """The JSON and its Markdown table beside it (.md)."""
    return write_report(json_path, report, markdown(report))[1]
