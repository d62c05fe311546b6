"""The main job on the embedded demo model: export it, restore held-out noisy photographs, show it.

Writes, under the output folder: the verified ONNX graph, and for the chosen image clean.png,
noisy.png, restored.png and side_by_side.png (noisy | restored | clean); for a photo of the
user's, those names after its own (`beach.side_by_side.png`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo
from hinet_deploy.export.checkpoint import load_checkpoint
from hinet_deploy.export.onnx_export import export_onnx
from hinet_deploy.export.shipped import DEMO_CHECKPOINT
from hinet_deploy.checks.datasets import as_rgb8
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.images import read_image, write_image
from hinet_deploy.runtime.metrics import psnr



@dataclass
class DemoRow:
    image: str
    size: str
    noisy_psnr: float  # noisy vs clean
    restored_psnr: float  # ONNX Runtime restoration vs clean
    torch_psnr: float  # PyTorch reference restoration vs clean
    onnx_vs_torch: float  # ONNX Runtime vs PyTorch, both 8-bit

    @property
    def gain(self) -> float:
        return self.restored_psnr - self.noisy_psnr


def side_by_side(*images: np.ndarray, gap: int = 8) -> np.ndarray:
    height = max(im.shape[0] for im in images)
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    cols = []
    for im in images:
        padded = np.full((height, im.shape[1], 3), 255, dtype=np.uint8)
        padded[:im.shape[0]] = im
        cols += [padded, spacer]
    return np.concatenate(cols[:-1], axis=1)


def evaluate(name: str, clean: np.ndarray, onnx_restorer: Restorer, torch_restorer: Restorer,
             seed: int) -> tuple[DemoRow, np.ndarray, np.ndarray]:
    noisy = add_gaussian_noise(clean, DEMO_NOISE_SIGMA, seed)
    restored = onnx_restorer(noisy)
    reference = torch_restorer(noisy)
    row = DemoRow(name, f"{clean.shape[1]}x{clean.shape[0]}", psnr(noisy, clean),
                  psnr(restored, clean), psnr(reference, clean), psnr(restored, reference))
    return row, noisy, restored


def run_demo(out_dir: Path, image_path: Path | None = None, seed: int = 0,
             checkpoint: Path = DEMO_CHECKPOINT, log=print) -> list[DemoRow]:
    out_dir = Path(out_dir)
    images = {Path(image_path).stem: read_image(image_path)} if image_path else \
        {name: load_photo(name) for name in HELD_OUT}  # first: a bad image costs no export
    loaded = load_checkpoint(checkpoint)
    onnx_path = out_dir / "hinet-demo-denoise.onnx"
    report = export_onnx(loaded, onnx_path, log=lambda m: log(f"  {m}"))
    log(f"  {report.summary()}")
    rows = []
    with Restorer(onnx_path) as onnx_restorer, Restorer(checkpoint) as torch_restorer:
        for i, (name, clean) in enumerate(images.items()):
            clean = as_rgb8(clean)
            row, noisy, restored = evaluate(name, clean, onnx_restorer, torch_restorer, seed + i)
            rows.append(row)
            if i == 0:
                for file, im in [("clean", clean), ("noisy", noisy), ("restored", restored),
                                 ("side_by_side", side_by_side(noisy, restored, clean))]:
                    write_image(out_dir / demo_image_name(file, image_path), im)
    return rows


def demo_image_name(kind: str, image_path: Path | None = None) -> str:
    """The file a demo image goes to: `side_by_side.png` for the held-out photographs, and for a
    photo of the user's its own name first (`beach.side_by_side.png`), so that demos of different
    photos never overwrite each other's."""
    return f"{kind}.png" if image_path is None else f"{Path(image_path).stem}.{kind}.png"


def format_rows(rows: list[DemoRow]) -> str:
    lines = ["| image | size | noisy PSNR | restored PSNR (ONNX Runtime) | gain | PyTorch PSNR | "
             "ONNX vs PyTorch |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.image} | {r.size} | {r.noisy_psnr:.2f} dB | {r.restored_psnr:.2f} dB | "
                     f"+{r.gain:.2f} dB | {r.torch_psnr:.2f} dB | {r.onnx_vs_torch:.1f} dB |")
    mean_gain = np.mean([r.gain for r in rows])
    lines.append(f"\nmean gain over the noisy input: {mean_gain:+.2f} dB "
                 f"(Gaussian noise, sigma {DEMO_NOISE_SIGMA:g}/255, clipped to 8 bits)")
    return "\n".join(lines)

