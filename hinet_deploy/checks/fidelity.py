"""What each precision costs: FP32, FP16 and INT8 graphs against the PyTorch FP32 reference.

The graphs are the exact ones engines are built from, run in ONNX Runtime on the CPU, so the
numerical effect of each precision is measured on any machine. Held-out photographs get the demo
model's noise; each output is compared with the clean photo (PSNR/SSIM) and with PyTorch (PSNR).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo
from hinet_deploy.export.shipped import DEMO_CHECKPOINT
from hinet_deploy.checks.report import write_report
from hinet_deploy.build.flow import PRECISIONS, GraphRequest
from hinet_deploy.checks.contenders import BASELINE, contenders
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.metrics import psnr, ssim


@dataclass
class FidelityRow:
    backend: str
    precision: str
    graph: str
    noisy_psnr: float  # mean over images, vs clean
    psnr: float  # restored vs clean
    ssim: float
    psnr_vs_torch: float  # restored vs the PyTorch FP32 restoration
    worst_psnr_vs_torch: float

    @property
    def name(self) -> str:
        """`backend:precision`, e.g. `openvino:bf16`."""
        return f"{self.backend}:{self.precision}"

    @property
    def gain(self) -> float:
        return self.psnr - self.noisy_psnr


def fidelity(req: GraphRequest, precisions=PRECISIONS, images=HELD_OUT,
             seed: int = 0) -> list[FidelityRow]:
    ckpt = req.ckpt or DEMO_CHECKPOINT
    clean = {name: load_photo(name) for name in images}
    noisy = {name: add_gaussian_noise(im, DEMO_NOISE_SIGMA, seed + i) for i, (name, im)
             in enumerate(clean.items())}
    with Restorer(ckpt) as reference:
        torch_out = {name: reference(im) for name, im in noisy.items()}
    rows = []
    # Every contender but the baseline (the reference above): the graphs in ONNX Runtime, and
    # what other backends run on them.
    runs = [(c.backend, c.precision, c.model, {"backend": c.backend, **dict(c.options)})
            for c in contenders(ckpt, req, precisions=precisions) if c.key != BASELINE]
    for backend, precision, graph, options in runs:
        with Restorer(graph, **options) as restore:
            outs = {name: restore(im) for name, im in noisy.items()}
        vs_torch = [psnr(outs[n], torch_out[n]) for n in images]
        rows.append(FidelityRow(
            backend, precision, str(graph), float(np.mean([psnr(noisy[n], clean[n]) for n in images])),
            float(np.mean([psnr(outs[n], clean[n]) for n in images])),
            float(np.mean([ssim(outs[n], clean[n]) for n in images])),
            float(np.mean(vs_torch)), float(min(vs_torch))))
    return rows


def format_rows(rows: list[FidelityRow], images=HELD_OUT) -> str:
    lines = [f"held-out photographs: {', '.join(images)}; Gaussian noise sigma {DEMO_NOISE_SIGMA:g}; "
             f"means over images", "",
             "| contender | PSNR vs clean | gain over noisy | SSIM vs clean | PSNR vs PyTorch FP32 "
             "(mean / worst) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.psnr:.2f} dB | {r.gain:+.2f} dB | {r.ssim:.4f} | "
                     f"{r.psnr_vs_torch:.1f} / {r.worst_psnr_vs_torch:.1f} dB |")
    return "\n".join(lines)


def write_json(rows: list[FidelityRow], path: Path) -> None:
    write_report(path, [{"contender": r.name, **asdict(r), "gain": r.gain} for r in rows])
