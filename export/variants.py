"""The published HINet variants and how to recognise one from its state dict alone.

Configs are the ones of the official BasicSR option files (GoPro, REDS, SIDD 1x / 0.5x, Rain13k).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from hinet_deploy.export.model import HINetConfig


@dataclass(frozen=True)
class Variant:
    name: str
    config: HINetConfig
    task: str
    # The official test configs tile with 256 crops (grids) except SIDD, whose images are 256 crops.
    official_tiling: str


OFFICIAL_VARIANTS = {
    v.name: v
    for v in [
        Variant("gopro", HINetConfig(wf=64, hin_position_left=3), "deblur", "grids"),
        Variant("reds", HINetConfig(wf=64, hin_position_left=3), "deblur (JPEG)", "grids"),
        Variant("sidd-1x", HINetConfig(wf=64), "denoise (real)", "whole"),
        Variant("sidd-0.5x", HINetConfig(wf=32), "denoise (real)", "whole"),
        Variant("rain13k", HINetConfig(wf=64), "derain", "grids"),
    ]
}

# The demo denoiser shipped with the package (its file and limits: export.shipped).
DEMO_VARIANT = Variant("demo", HINetConfig(wf=16), "denoise (Gaussian, sigma 25)", "whole")

_NORM_KEY = re.compile(r"^down_path_1\.(\d+)\.norm\.weight$")
_DOWN_KEY = re.compile(r"^down_path_1\.(\d+)\.conv_1\.weight$")


def infer_config(state_dict) -> HINetConfig:
    """Reads width, depth, input channels and the HIN levels off the parameter names and shapes.

    Raises KeyError/ValueError on state dicts that are not HINet; callers turn that into a user error.
    """
    first = state_dict["conv_01.weight"]
    wf, in_chn = int(first.shape[0]), int(first.shape[1])
    levels = sorted(int(m.group(1)) for k in state_dict if (m := _DOWN_KEY.match(k)))
    if not levels or levels != list(range(len(levels))):
        raise ValueError("encoder levels down_path_1.N are missing or not numbered 0..N")
    hin = sorted(int(m.group(1)) for k in state_dict if (m := _NORM_KEY.match(k)))
    if hin and hin != list(range(hin[0], hin[-1] + 1)):
        raise ValueError(f"HIN levels {hin} are not contiguous")
    # A network without any HIN level is still a valid (ablation) HINet: an empty range.
    left, right = (hin[0], hin[-1]) if hin else (len(levels), len(levels) - 1)
    return HINetConfig(in_chn=in_chn, wf=wf, depth=len(levels),
                       hin_position_left=left, hin_position_right=right)


def match_official(config: HINetConfig) -> list[str]:
    """Names of the official variants with exactly this architecture (GoPro and REDS share one)."""
    return [name for name, v in OFFICIAL_VARIANTS.items() if v.config == config]
