"""What the package ships beside its code, named without importing torch: the runtime-only install
(`[onnxruntime,video]`, what a Jetson user picks to keep JetPack's torch) must be able to say what
`--model demo` is without loading the model code."""
from __future__ import annotations

from pathlib import Path

# The demo denoiser: small width (wf 16), HIN at every encoder level (11 MB, FP16 weights in the
# official BasicSR format; trained by `python -m hinet_deploy.demo.train`).
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "hinet-demo-denoise.pth"
# Said wherever the demo model restores someone's own footage (docs/demo-model.md).
DEMO_LIMITS = ("the demo model is a small denoiser for Gaussian noise of sigma 25 (of 255), trained "
               "on a few photographs: it smooths clean footage, gains much less on JPEG or camera "
               "noise, and does worse on grayscale; for your footage use a checkpoint trained for "
               "it (docs/engines.md: Your checkpoint)")
