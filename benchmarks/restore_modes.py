"""Which tiling mode `restore` and the Restorer use by default: quality and peak memory of each.

    python benchmarks/restore_modes.py [--scales 1 2 4] [--threads 2]

The demo denoiser (ONNX Runtime) restores the three held-out photographs with Gaussian noise
(sigma 25, the model's own), each scaled up by 1, 2 and 4 (Pillow's bicubic; 4x is about 2400x1700),
in every mode: whole, grids (official 256 crops) and blend with tiles of 256, 512 and 1024. Each
(mode, scale) runs in a child process of its own, so its peak resident memory (VmHWM, less the
memory of the loaded model) is its own and not what an earlier run left in an allocator. Printed:
mean PSNR and SSIM against the clean image, and the peak memory over the three photos.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


CONTENDERS = [("whole", None), ("grids", None), ("blend", 256), ("blend", 512), ("blend", 1024)]


def child(graph: str, mode: str, tile: int | None, scale: int, threads: int) -> dict:
    """One mode at one scale over the held-out photos: runs in its own process."""
    from PIL import Image

    from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo
    from hinet_deploy.common.memory import PeakMemory
    from hinet_deploy.runtime import Restorer
    from hinet_deploy.runtime.metrics import psnr, ssim

    rows = []
    with Restorer(graph, mode=mode, tile=tile, threads=threads, memory_budget_mb=10**9) as restore:
        restore(np.zeros((32, 32, 3), np.uint8))  # sessions and arenas exist before measuring
        for i, name in enumerate(HELD_OUT):
            clean = load_photo(name)
            if scale > 1:
                size = (clean.shape[1] * scale, clean.shape[0] * scale)
                clean = np.array(Image.fromarray(clean).resize(size, Image.BICUBIC))
            noisy = add_gaussian_noise(clean, DEMO_NOISE_SIGMA, i)
            with PeakMemory() as memory:
                restored = restore(noisy)
            rows.append({"image": name, "size": f"{clean.shape[1]}x{clean.shape[0]}",
                         "psnr": psnr(restored, clean), "ssim": ssim(restored, clean),
                         "added_mb": memory.added_mb})
    return {"psnr": float(np.mean([r["psnr"] for r in rows])),
            "ssim": float(np.mean([r["ssim"] for r in rows])),
            "peak_mb": max(r["added_mb"] for r in rows), "sizes": [r["size"] for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        graph, mode, tile, scale = args.child
        result = child(graph, mode, int(tile) or None, int(scale), args.threads)
        print(json.dumps(result))
        return
    from hinet_deploy.export.checkpoint import load_checkpoint
    from hinet_deploy.export.onnx_export import export_onnx
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "demo.onnx"
        export_onnx(load_checkpoint(DEMO_CHECKPOINT), graph, log=lambda m: None)
        print("| scale | sizes | mode | PSNR | SSIM | peak memory added |")
        print("|---|---|---|---|---|---|")
        for scale in args.scales:
            for mode, tile in CONTENDERS:
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                                      "--child", str(graph), mode, str(tile or 0), str(scale)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                label = mode + (f" {tile}" if tile else "")
                print(f"| {scale}x | {', '.join(r['sizes'])} | {label} | {r['psnr']:.2f} dB | "
                      f"{r['ssim']:.4f} | {r['peak_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
