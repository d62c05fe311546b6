"""What the demo model does to footage it was not trained for, measured on the held-out photographs.

    python benchmarks/demo_limits.py

The demo model is a sigma-25 Gaussian denoiser. For each held-out photograph (never seen in
training) it restores, in the Restorer's default mode, and prints PSNR against the clean photo:
- colour with Gaussian noise of sigma 25 (what it was trained for);
- the same photo in grayscale with the same noise (restored as three equal channels);
- noise of sigma 25 then JPEG at quality 50 (compressed noise, as from a phone or a web video);
- the clean photo itself (what it does to footage without noise: the loss is over-smoothing).
"""
from __future__ import annotations

import io
import statistics

import numpy as np
from PIL import Image

from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo
from hinet_deploy.export.shipped import DEMO_CHECKPOINT
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.metrics import psnr


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.array(Image.open(buffer).convert("RGB"))


def grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.array(Image.fromarray(image).convert("L"))[..., None], 3, axis=2)


def main() -> int:
    cases = {"colour + Gaussian sigma 25 (trained for)": lambda c, i: (
                 c, add_gaussian_noise(c, DEMO_NOISE_SIGMA, i)),
             "grayscale + Gaussian sigma 25": lambda c, i: (
                 grey(c), np.repeat(add_gaussian_noise(grey(c), DEMO_NOISE_SIGMA, i)[..., :1], 3,
                                    axis=2)),
             "Gaussian sigma 25, then JPEG quality 50": lambda c, i: (
                 c, jpeg(add_gaussian_noise(c, DEMO_NOISE_SIGMA, i), 50)),
             "clean (no noise at all)": lambda c, i: (c, c)}
    print(f"demo model ({DEMO_CHECKPOINT.name}), PyTorch, default mode; held-out photographs "
          f"{', '.join(HELD_OUT)}; means over them\n")
    print("| input | PSNR in | PSNR out | gain |")
    print("|---|---|---|---|")
    with Restorer(DEMO_CHECKPOINT) as restorer:
        for name, make in cases.items():
            before, after = [], []
            for index, photo in enumerate(HELD_OUT):
                clean, degraded = make(load_photo(photo), index)
                before.append(psnr(degraded, clean))
                after.append(psnr(grey(restorer(degraded)) if name.startswith("grayscale")
                                  else restorer(degraded), clean))
            b, a = statistics.fmean(before), statistics.fmean(after)
            gain = f"{a - b:+.2f} dB" if np.isfinite(b) else "n/a"
            shown = f"{b:.2f} dB" if np.isfinite(b) else "identical"
            print(f"| {name} | {shown} | {a:.2f} dB | {gain} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
