"""Trains the demo denoiser shipped as export/weights/hinet-demo-denoise.pth.

    python -m hinet_deploy.demo.train [-o hinet-demo-denoise.pth] [--steps 2400]

It sits above the stages (it uses the calibration photographs and the export stage's model).

A wf=16 HINet with HIN at every encoder level, trained on the scikit-image photographs of
calib.photos.TRAIN with synthetic Gaussian noise (sigma 25 on the 0-255 scale), seeded. On a 2-core
CPU it takes about 25 minutes. The result is saved in the official BasicSR format ({'params': ...})
with half-precision weights to keep the file small (the loader casts them back to float32).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, TRAIN, load_photo
from hinet_deploy.export.checkpoint import save_basicsr
from hinet_deploy.export.model import HINet
from hinet_deploy.export.variants import DEMO_VARIANT

SIGMA = DEMO_NOISE_SIGMA / 255.0
# Patch 96, batch 8: 0.55 s a step on the 2-core CPU, large enough for stable instance-norm statistics
# at the deepest level (6x6).
PATCH, BATCH = 96, 8


def training_images() -> list[torch.Tensor]:
    return [torch.from_numpy(load_photo(n)).permute(2, 0, 1).float() / 255.0 for n in TRAIN]


def sample_batch(images, gen: torch.Generator):
    # Pick images in proportion to their area so every pixel is about equally likely.
    areas = torch.tensor([im.shape[1] * im.shape[2] for im in images], dtype=torch.float64)
    picks = torch.multinomial(areas, BATCH, replacement=True, generator=gen)
    crops = []
    for idx in picks.tolist():
        im = images[idx]
        top = int(torch.randint(0, im.shape[1] - PATCH + 1, (1,), generator=gen))
        left = int(torch.randint(0, im.shape[2] - PATCH + 1, (1,), generator=gen))
        crop = im[:, top:top + PATCH, left:left + PATCH]
        crop = torch.rot90(crop, int(torch.randint(0, 4, (1,), generator=gen)), dims=(1, 2))
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.flip(2)
        crops.append(crop)
    clean = torch.stack(crops)
    noisy = clean + SIGMA * torch.randn(clean.shape, generator=gen)
    # Half of the batch is clipped and quantised like a real 8-bit file, half is not.
    quantised = noisy.clamp(0, 1).mul(255).round().div(255)
    keep_float = (torch.rand(BATCH, 1, 1, 1, generator=gen) < 0.5).float()
    return keep_float * noisy + (1 - keep_float) * quantised, clean


def psnr_loss(pred, target):
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(mse + 1e-8).mean()


@torch.no_grad()
def held_out_gain(net, seed=0) -> float:
    """Mean PSNR gain (dB) on a 256x256 centre crop of each held-out photo: progress only."""
    gen = torch.Generator().manual_seed(seed)
    gains = []
    for name in HELD_OUT:
        im = torch.from_numpy(load_photo(name)).permute(2, 0, 1).float()[None] / 255.0
        h, w = im.shape[2] // 2, im.shape[3] // 2
        clean = im[:, :, h - 128:h + 128, w - 128:w + 128]
        noisy = (clean + SIGMA * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
        out = net(noisy)[1].clamp(0, 1)
        gains.append(10 * math.log10(F.mse_loss(noisy, clean) / F.mse_loss(out, clean)))
    return float(np.mean(gains))


def train(steps: int, seed: int, log_every: int = 100) -> HINet:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = HINet(DEMO_VARIANT.config)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-6)
    images = training_images()
    start = time.time()
    for step in range(1, steps + 1):
        noisy, clean = sample_batch(images, gen)
        stage1, stage2 = net(noisy)
        loss = psnr_loss(stage1, clean) + psnr_loss(stage2, clean)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            net.eval()
            gain = held_out_gain(net)
            net.train()
            print(f"step {step}/{steps}  loss {loss.item():.2f}  held-out gain {gain:.2f} dB  "
                  f"{time.time() - start:.0f} s", flush=True)
    return net.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="hinet-demo-denoise.pth",
                        help="where to write the checkpoint (the shipped one is export/weights/)")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    net = train(args.steps, args.seed)
    state = {k: v.half() for k, v in net.state_dict().items()}
    save_basicsr(state, Path(args.output))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
