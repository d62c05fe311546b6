"""PNG figures of a validation: latency vs PSNR per backend, and a crop grid with difference maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hinet_deploy.common.files import atomic_path

CROP = 160  # pixels: large enough to judge texture, small enough to see pixels in a report
DIFF_GAIN = 10.0  # |output - PyTorch| is this many times brighter in the heat map


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def latency_vs_psnr(report: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in report["results"]:
        if "psnr" not in r:
            continue
        # A legend, not annotations: points of equal PSNR and similar speed would overlap.
        ax.scatter(r["seconds_per_image"], r["psnr"], s=40, label=f"{r['backend']} {r['precision']}")
    ax.set_xlabel("seconds per image (median)")
    ax.set_ylabel("PSNR vs clean (dB, mean)")
    ax.set_title(f"{report['device']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def _centre_crop(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
    return image[top:top + CROP, left:left + CROP]


def crop_grid(sample, path: Path) -> None:
    """Row 1: degraded, PyTorch, each other output, clean. Row 2: |output - PyTorch| x DIFF_GAIN."""
    plt = _pyplot()
    name, degraded, clean, outputs = sample
    reference = next(iter(outputs.values()))
    columns = [("degraded", degraded, None)]
    columns += [(" ".join(key), out, out) for key, out in outputs.items()]
    columns += [("clean", clean, None)]
    fig, axes = plt.subplots(2, len(columns), figsize=(2.2 * len(columns), 4.6), squeeze=False)
    for col, (title, image, output) in enumerate(columns):
        axes[0, col].imshow(_centre_crop(image))
        axes[0, col].set_title(title, fontsize=8)
        if output is not None:
            diff = np.abs(output.astype(np.float32) - reference.astype(np.float32)).mean(axis=2)
            axes[1, col].imshow(_centre_crop(diff) * DIFF_GAIN, cmap="inferno", vmin=0, vmax=255)
            axes[1, col].set_title(f"|diff| x{DIFF_GAIN:g}, max {diff.max():.0f}", fontsize=7)
        for row in range(2):
            axes[row, col].axis("off")
    fig.suptitle(f"{name}: centre {CROP}x{CROP} crop", fontsize=9)
    _save(fig, path)
    plt.close(fig)


LABELLED_LAYERS = 8  # the layers that recover most are named on the sensitivity chart


def sensitivity_chart(report, path: Path, choice=None) -> None:
    """dB recovered against float GMACs, one point a layer (build.sensitivity.Report); the chosen
    layers, when given, drawn apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    chosen = set(choice.layers) if choice is not None else set()
    for group, colour, label in ((False, "tab:blue", "layer"), (True, "tab:red", "chosen")):
        points = [c for c in report.layers if (c.layer in chosen) == group and not c.screened_out]
        if points:
            ax.scatter([c.macs / 1e9 for c in points], [c.gain for c in points], s=18,
                       color=colour, label=label if chosen else None)
    for c in report.layers[:LABELLED_LAYERS]:
        ax.annotate(c.layer, (c.macs / 1e9, c.gain), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.6)
    mea = report.measurement
    ax.set_xlabel(f"float GMACs of the layer at {mea['crop']}x{mea['crop']}")
    ax.set_ylabel("dB recovered against all-INT8 (PSNR vs FP32)")
    ax.set_title(f"INT8 sensitivity, one layer in float at a time; all-INT8 "
                 f"{report.int8_psnr:.2f} dB vs FP32", fontsize=9)
    ax.grid(alpha=0.3)
    if chosen:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def claims_chart(report: dict, path: Path) -> None:
    """Measured against claimed: speed-up per claim and backend, and the MACs share."""
    plt = _pyplot()
    tasks = [t["task"] for t in report["tasks"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(tasks))
    series = [("paper", [t["paper_speedup"] for t in report["tasks"]])]
    series += [(b, [t["speedup"][b] for t in report["tasks"]]) for b in report["backends"]]
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        left.bar(x + i * width, values, width, label=label)
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set(xticks=x + 0.4 - width / 2, xticklabels=tasks, ylabel="speed-up over MPRNet (x)",
             title="speed-up: paper vs measured")
    left.legend()
    right.bar(x - 0.2, [t["paper_macs_share"] for t in report["tasks"]], 0.4, label="paper")
    right.bar(x + 0.2, [t["macs_share"] for t in report["tasks"]], 0.4, label="measured")
    right.set(xticks=x, xticklabels=tasks, ylabel="HINet MACs / MPRNet MACs (%)",
              title="MACs share")
    right.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
