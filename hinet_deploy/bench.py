"""`hinet-deploy bench`: latency and throughput per backend and precision, measured side by side.

At each size and batch every contender runs once to warm up (excluded), then the contenders take
turns, round after round, so that a slow phase of a noisy machine hits all of them alike. The first
of each round rotates, so no contender always follows the same one (a fixed order once made the
Restorer look 14 % faster than the session it wraps). Reported:
median and p90 latency, images per second, speed-up over PyTorch FP32 eager on the same device,
the MACs of one image (exact and paper convention), and memory.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from hinet_deploy.export.macs import count_macs
from hinet_deploy.common.files import atomic_path
from hinet_deploy.pipeline import GraphRequest, precision_graphs
from hinet_deploy.validate import UNAVAILABLE, device_name
from hinet_deploy.runtime.backends import OnnxRuntimeBackend, TorchBackend
from hinet_deploy.runtime.tiling import round_up

DEFAULT_SIZES = ((256, 256), (720, 1280), (1080, 1920))  # (H, W)
BASELINE = ("pytorch", "fp32")
# GPU-only contenders the issue names; listed as not run where there is no CUDA device.
GPU_ONLY = [{"backend": "pytorch", "precision": "fp16 channels-last",
             "reason": "needs a CUDA device"}]


def _rss_mb() -> float:
    """Current resident memory of this process, from /proc (Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _contenders(ckpt: Path, req: GraphRequest, threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    yield BASELINE, TorchBackend(ckpt)
    for precision, graph in precision_graphs(req):
        yield ("onnxruntime", precision), OnnxRuntimeBackend(graph, threads=threads)


def _percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench(ckpt: Path, req: GraphRequest, sizes=DEFAULT_SIZES, batches=(1,), repeats: int = 5,
          threads: int | None = None, log=lambda m: print(m, file=sys.stderr)) -> dict:
    import onnx

    contenders = dict(_contenders(ckpt, req, threads))
    fp32_graph = onnx.load(str(contenders[("onnxruntime", "fp32")].path))
    rows, rng = [], np.random.default_rng(0)
    for height, width in sizes:
        ph, pw = round_up(height, 16), round_up(width, 16)  # what the Restorer pads to
        macs = count_macs(fp32_graph, ph, pw)
        for batch in batches:
            x = rng.random((batch, 3, ph, pw), dtype=np.float32)
            times = {key: [] for key in contenders}
            rss = {}
            for key, backend in contenders.items():
                backend.run(x)  # warm-up, excluded
                rss[key] = _rss_mb()
            keys = list(contenders)
            for round_index in range(repeats):
                shift = round_index % len(keys)  # rotate who goes first (see the module docstring)
                for key in keys[shift:] + keys[:shift]:
                    start = time.perf_counter()
                    contenders[key].run(x)
                    times[key].append(time.perf_counter() - start)
                log(f"{width}x{height} batch {batch}: round {round_index + 1}/{repeats}")
            base = statistics.median(times[BASELINE])
            for key, t in times.items():
                median = statistics.median(t)
                rows.append({"backend": key[0], "precision": key[1], "height": height,
                             "width": width, "padded": [ph, pw], "batch": batch,
                             "median_s": median, "p90_s": _percentile(t, 90),
                             "images_per_s": batch / median, "speedup_vs_pytorch_fp32": base / median,
                             "macs_per_image": macs.macs, "macs_paper_per_image": macs.macs_paper,
                             "rss_mb_after_warmup": rss[key], "times_s": t})
    for backend in contenders.values():
        backend.close()
    return {"checkpoint": str(ckpt), "device": device_name(), "threads": threads,
            "repeats": repeats, "warmup_runs": 1, "order": "alternating rounds",
            "peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_device_memory_mb": None, "rows": rows, "unavailable": UNAVAILABLE + GPU_ONLY}


def markdown(report: dict) -> str:
    lines = [f"device: {report['device']}; {report['threads'] or 'default'} threads; median of "
             f"{report['repeats']} alternating rounds after one warm-up; peak host RSS "
             f"{report['peak_host_rss_mb']:.0f} MB", "",
             "| size | batch | backend | precision | median | p90 | images/s | vs PyTorch FP32 | "
             "G MACs / image (exact / paper) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['width']}x{r['height']} | {r['batch']} | {r['backend']} | "
                     f"{r['precision']} | {r['median_s']:.3f} s | {r['p90_s']:.3f} s | "
                     f"{r['images_per_s']:.2f} | {r['speedup_vs_pytorch_fp32']:.2f}x | "
                     f"{r['macs_per_image'] / 1e9:.1f} / {r['macs_paper_per_image'] / 1e9:.1f} |")
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
