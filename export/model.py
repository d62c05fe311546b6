"""HINet (Chen et al., CVPRW 2021) in PyTorch, laid out so that official checkpoints load strictly.

Two U-Nets run one after the other. Stage 1 restores the image and hands a supervised-attention
feature (SAM) to stage 2; stage 2 also receives stage 1's encoder and decoder features through
cross-stage feature fusion (CSFF). Encoder levels inside [hin_left, hin_right] apply instance norm
to the first half of their channels after the first convolution (the HIN block).

Module names and parameter shapes follow the official BasicSR checkpoints exactly; the forward is
this project's own.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HINetConfig:
    """The constructor arguments of an official HINet; names match the BasicSR YAML configs."""

    in_chn: int = 3
    wf: int = 64
    depth: int = 5
    relu_slope: float = 0.2
    hin_position_left: int = 0
    hin_position_right: int = 4

    def uses_hin(self, level: int) -> bool:
        return self.hin_position_left <= level <= self.hin_position_right

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.depth - 1)

    def hin_block_count(self) -> int:
        return 2 * sum(self.uses_hin(level) for level in range(self.depth))

    def as_dict(self) -> dict:
        return asdict(self)


class EncoderBlock(nn.Module):
    """Two 3x3 convs with a 1x1 residual; optional HIN, CSFF inputs and a 4x4 stride-2 downsample.

    Also serves as the decoder's conv block (no HIN, no CSFF, no downsample), as in the original.
    """

    def __init__(self, in_ch, out_ch, *, downsample, slope, use_csff=False, use_hin=False):
        super().__init__()
        self.slope = slope
        self.identity = nn.Conv2d(in_ch, out_ch, 1)
        self.conv_1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv_2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if use_csff:
            self.csff_enc = nn.Conv2d(out_ch, out_ch, 3, padding=1)
            self.csff_dec = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.use_csff = use_csff
        if use_hin:
            self.norm = nn.InstanceNorm2d(out_ch // 2, affine=True)
        self.use_hin = use_hin
        # A static split point exports as Slice with constant bounds (torch.chunk traces Shape ops).
        self.half = out_ch // 2
        if downsample:
            self.downsample = nn.Conv2d(out_ch, out_ch, 4, stride=2, padding=1, bias=False)
        self.has_downsample = downsample

    def _half_norm(self, half):
        # At one spatial element (a tiny image at the deepest level) torch's instance norm raises,
        # while the ONNX operator gives 0 before the affine: the same here, so every backend takes
        # any H and W. Traced exports never see a 1x1 feature map, so the graph is unchanged.
        if not torch.jit.is_tracing() and half.shape[2] * half.shape[3] == 1:
            return self.norm.bias.view(1, -1, 1, 1).expand_as(half).to(half.dtype)
        return self.norm(half)

    def forward(self, x, enc=None, dec=None):
        y = self.conv_1(x)
        if self.use_hin:
            y = torch.cat([self._half_norm(y[:, :self.half]), y[:, self.half:]], dim=1)
        y = F.leaky_relu(y, self.slope)
        y = F.leaky_relu(self.conv_2(y), self.slope)
        y = y + self.identity(x)
        if enc is not None:
            y = y + self.csff_enc(enc) + self.csff_dec(dec)
        if self.has_downsample:
            return self.downsample(y), y
        return y


class DecoderBlock(nn.Module):
    """2x2 stride-2 transposed conv, concatenation with the skip, then a plain conv block."""

    def __init__(self, in_ch, out_ch, slope):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.conv_block = EncoderBlock(in_ch, out_ch, downsample=False, slope=slope)

    def forward(self, x, skip):
        return self.conv_block(torch.cat([self.up(x), skip], dim=1))


class SupervisedAttention(nn.Module):
    """SAM: predicts the stage-1 image and gates the features passed to stage 2 with it."""

    def __init__(self, ch, in_chn):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, in_chn, 3, padding=1)
        self.conv3 = nn.Conv2d(in_chn, ch, 3, padding=1)

    def forward(self, features, image):
        stage1_image = self.conv2(features) + image
        gate = torch.sigmoid(self.conv3(stage1_image))
        return self.conv1(features) * gate + features, stage1_image


class HINet(nn.Module):
    """Returns [stage-1 image, stage-2 image]; the restoration is the stage-2 image."""

    def __init__(self, config: HINetConfig = HINetConfig()):
        super().__init__()
        self.config = config
        c, wf, slope = config, config.wf, config.relu_slope
        self.conv_01 = nn.Conv2d(c.in_chn, wf, 3, padding=1)
        self.conv_02 = nn.Conv2d(c.in_chn, wf, 3, padding=1)
        self.down_path_1 = nn.ModuleList()
        self.down_path_2 = nn.ModuleList()
        widths = [wf * 2**level for level in range(c.depth)]
        prev = wf
        for level, width in enumerate(widths):
            last = level == c.depth - 1
            hin = c.uses_hin(level)
            self.down_path_1.append(
                EncoderBlock(prev, width, downsample=not last, slope=slope, use_hin=hin))
            self.down_path_2.append(
                EncoderBlock(prev, width, downsample=not last, slope=slope, use_hin=hin,
                             use_csff=not last))
            prev = width
        self.up_path_1 = nn.ModuleList()
        self.up_path_2 = nn.ModuleList()
        self.skip_conv_1 = nn.ModuleList()
        self.skip_conv_2 = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up_path_1.append(DecoderBlock(prev, width, slope))
            self.up_path_2.append(DecoderBlock(prev, width, slope))
            self.skip_conv_1.append(nn.Conv2d(width, width, 3, padding=1))
            self.skip_conv_2.append(nn.Conv2d(width, width, 3, padding=1))
            prev = width
        self.sam12 = SupervisedAttention(wf, c.in_chn)
        self.cat12 = nn.Conv2d(2 * wf, wf, 1)
        self.last = nn.Conv2d(wf, c.in_chn, 3, padding=1)

    def forward(self, image):
        x, encoder_skips = self._encode(self.down_path_1, self.conv_01(image))
        decoder_feats = []
        for up, skip_conv, skip in zip(self.up_path_1, self.skip_conv_1, reversed(encoder_skips)):
            x = up(x, skip_conv(skip))
            decoder_feats.append(x)
        sam_features, stage1 = self.sam12(x, image)

        x = self.cat12(torch.cat([self.conv_02(image), sam_features], dim=1))
        x, skips2 = self._encode(self.down_path_2, x, encoder_skips, decoder_feats[::-1])
        for up, skip_conv, skip in zip(self.up_path_2, self.skip_conv_2, reversed(skips2)):
            x = up(x, skip_conv(skip))
        return [stage1, self.last(x) + image]

    @staticmethod
    def _encode(blocks, x, encs=None, decs=None):
        skips = []
        for level, block in enumerate(blocks):
            if not block.has_downsample:
                return block(x), skips
            fused = (encs[level], decs[level]) if encs is not None else (None, None)
            x, skip = block(x, *fused)
            skips.append(skip)
        return x, skips


class RestorationOutput(nn.Module):
    """Export wrapper: the stage-2 image alone, or both stages when asked."""

    def __init__(self, net: HINet, both_stages: bool = False):
        super().__init__()
        self.net = net
        self.both_stages = both_stages

    def forward(self, image):
        stage1, stage2 = self.net(image)
        return (stage1, stage2) if self.both_stages else stage2
