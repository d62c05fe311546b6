"""MPRNet (Zamir et al., "Multi-Stage Progressive Image Restoration", CVPR 2021), written here from
the paper's design as the reference HINet's claims are measured against. No MPRNet weights ship.

The network, as the paper describes it:
- Three stages. Stage 1 works on four non-overlapping quarters of the image, stage 2 on two halves
  (top and bottom), stage 3 on the whole image at full resolution.
- Stages 1 and 2 are three-level U-Nets built of channel-attention blocks (CAB: conv, PReLU, conv,
  channel attention, residual); levels are 1x, 1/2 and 1/4 of the input with n_feat, n_feat + s and
  n_feat + 2s channels (s = scale_unetfeats); down- and up-sampling are bilinear resizes followed by
  a 1x1 convolution, and the decoder's skips go through a CAB.
- A supervised attention module (SAM) between stages predicts that stage's image (supervised in
  training) and gates the features handed on with attention maps made from it.
- Cross-stage feature fusion: stage 2's encoder adds 1x1-convolved encoder and decoder features of
  stage 1 at every level; stage 3 adds those of stage 2, brought up to full resolution.
- Stage 3 (ORSNet) never downsamples: three original-resolution blocks, each num_cab CABs and a
  convolution with a residual, at n_feat + scale_orsnetfeats channels.
- One PReLU (a single learnable slope) is shared by every block; convolutions have no bias.

Parameter and module names follow the official implementation, so its checkpoints load strictly
(keys, shapes and parameter counts are tested against the official state dicts' listing). Forward
returns [stage-3 image, stage-2 image, stage-1 image], the final one first, as the official code
does. Height and width must be multiples of 8 (two halvings inside each half of the image).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.export.metadata import INPUT_NAME, OUTPUT_NAME

SIZE_MULTIPLE = 8
# In-place residuals: the adds of CAB and ORB are written in place, as the official code does; a fresh
# full-size tensor per block costs its allocation and first-touch page faults, which made the
# deblurring configuration (96 channels) 20 % slower than the official implementation on a 2-core
# CPU (PyTorch FP32, 256x256, 2 threads; medians of 6 alternated rounds 6.78 s against 5.67 s; in
# place 5.61 s against 5.55 s). benchmarks/mprnet_blocks.py times the building blocks both ways.
# Kept in float in INT8 graphs, as HINet's image-facing layers are: the convolutions that read the
# image (with their first block), the SAMs that make images and gates, and the tail.
FLOAT_LAYERS = ("shallow_feat1", "shallow_feat2", "shallow_feat3", "sam12", "sam23", "tail")


@dataclass(frozen=True)
class MPRNetConfig:
    n_feat: int
    scale_unetfeats: int
    scale_orsnetfeats: int
    num_cab: int = 8
    kernel_size: int = 3
    reduction: int = 4
    bias: bool = False


# The official repository's MPRNet() defaults of each task folder.
CONFIGS = {
    "deblur": MPRNetConfig(96, 48, 32),
    "denoise": MPRNetConfig(80, 48, 32),
    "derain": MPRNetConfig(40, 20, 16),
}


def _conv(cin: int, cout: int, kernel: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)


class ChannelAttention(nn.Module):
    """Squeeze (global average) and excite (two 1x1 convs, ReLU then sigmoid) the channels."""

    def __init__(self, channels: int, reduction: int, bias: bool):
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=bias),
                                     nn.ReLU(inplace=True),
                                     nn.Conv2d(channels // reduction, channels, 1, bias=bias),
                                     nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_du(F.adaptive_avg_pool2d(x, 1))


class CAB(nn.Module):
    """Channel-attention block: conv, activation, conv, attention, plus the input."""

    def __init__(self, channels: int, c: MPRNetConfig, act: nn.Module):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, c.kernel_size, c.bias), act,
                                  _conv(channels, channels, c.kernel_size, c.bias))
        self.CA = ChannelAttention(channels, c.reduction, c.bias)

    def forward(self, x):
        out = self.CA(self.body(x))
        out += x  # see "In-place residuals" at the top
        return out


def _cabs(channels: int, c: MPRNetConfig, act: nn.Module, count: int = 2) -> nn.Sequential:
    return nn.Sequential(*[CAB(channels, c, act) for _ in range(count)])


class Resample(nn.Module):
    """Bilinear resize by `factor`, then a 1x1 conv to the channels of the level reached."""

    def __init__(self, cin: int, cout: int, factor: float):
        super().__init__()
        self.factor = factor
        layers = [nn.Upsample(scale_factor=factor, mode="bilinear", align_corners=False),
                  nn.Conv2d(cin, cout, 1, bias=False)]
        if factor < 1:
            self.down = nn.Sequential(*layers)
        else:
            self.up = nn.Sequential(*layers)

    def forward(self, x):
        return (self.down if self.factor < 1 else self.up)(x)


class Encoder(nn.Module):
    def __init__(self, c: MPRNetConfig, act: nn.Module, csff: bool):
        super().__init__()
        n, s = c.n_feat, c.scale_unetfeats
        widths = (n, n + s, n + 2 * s)
        self.encoder_level1 = _cabs(widths[0], c, act)
        self.encoder_level2 = _cabs(widths[1], c, act)
        self.encoder_level3 = _cabs(widths[2], c, act)
        self.down12 = Resample(widths[0], widths[1], 0.5)
        self.down23 = Resample(widths[1], widths[2], 0.5)
        self.csff = csff
        if csff:  # 1x1 fusions of the previous stage's encoder and decoder features, per level
            for i, w in enumerate(widths, 1):
                setattr(self, f"csff_enc{i}", nn.Conv2d(w, w, 1, bias=c.bias))
                setattr(self, f"csff_dec{i}", nn.Conv2d(w, w, 1, bias=c.bias))

    def _fuse(self, level: int, x, enc, dec):
        if not self.csff:
            return x
        return (x + getattr(self, f"csff_enc{level}")(enc[level - 1])
                + getattr(self, f"csff_dec{level}")(dec[level - 1]))

    def forward(self, x, enc=None, dec=None):
        e1 = self._fuse(1, self.encoder_level1(x), enc, dec)
        e2 = self._fuse(2, self.encoder_level2(self.down12(e1)), enc, dec)
        e3 = self._fuse(3, self.encoder_level3(self.down23(e2)), enc, dec)
        return [e1, e2, e3]


class Decoder(nn.Module):
    def __init__(self, c: MPRNetConfig, act: nn.Module):
        super().__init__()
        n, s = c.n_feat, c.scale_unetfeats
        self.decoder_level1 = _cabs(n, c, act)
        self.decoder_level2 = _cabs(n + s, c, act)
        self.decoder_level3 = _cabs(n + 2 * s, c, act)
        self.skip_attn1 = CAB(n, c, act)
        self.skip_attn2 = CAB(n + s, c, act)
        self.up21 = Resample(n + s, n, 2)
        self.up32 = Resample(n + 2 * s, n + s, 2)

    def forward(self, feats):
        e1, e2, e3 = feats
        d3 = self.decoder_level3(e3)
        d2 = self.decoder_level2(self.up32(d3) + self.skip_attn2(e2))
        d1 = self.decoder_level1(self.up21(d2) + self.skip_attn1(e1))
        return [d1, d2, d3]


class SAM(nn.Module):
    """Supervised attention: the stage's image, and features gated by attention made from it."""

    def __init__(self, n_feat: int, bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feat, n_feat, 1, bias=bias)
        self.conv2 = nn.Conv2d(n_feat, 3, 1, bias=bias)
        self.conv3 = nn.Conv2d(3, n_feat, 1, bias=bias)

    def forward(self, features, image):
        restored = self.conv2(features) + image
        gate = torch.sigmoid(self.conv3(restored))
        return self.conv1(features) * gate + features, restored


class ORB(nn.Module):
    """Original-resolution block: num_cab CABs and a conv, plus the input."""

    def __init__(self, channels: int, c: MPRNetConfig, act: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*[CAB(channels, c, act) for _ in range(c.num_cab)],
                                  _conv(channels, channels, c.kernel_size, c.bias))

    def forward(self, x):
        out = self.body(x)
        out += x  # see "In-place residuals" at the top
        return out


class ORSNet(nn.Module):
    def __init__(self, c: MPRNetConfig, act: nn.Module):
        super().__init__()
        n, s, width = c.n_feat, c.scale_unetfeats, c.n_feat + c.scale_orsnetfeats
        self.orb1, self.orb2, self.orb3 = (ORB(width, c, act) for _ in range(3))
        self.up_enc1 = Resample(n + s, n, 2)
        self.up_dec1 = Resample(n + s, n, 2)
        self.up_enc2 = nn.Sequential(Resample(n + 2 * s, n + s, 2), Resample(n + s, n, 2))
        self.up_dec2 = nn.Sequential(Resample(n + 2 * s, n + s, 2), Resample(n + s, n, 2))
        for i in (1, 2, 3):
            setattr(self, f"conv_enc{i}", nn.Conv2d(n, width, 1, bias=c.bias))
            setattr(self, f"conv_dec{i}", nn.Conv2d(n, width, 1, bias=c.bias))

    def forward(self, x, enc, dec):
        x = self.orb1(x) + self.conv_enc1(enc[0]) + self.conv_dec1(dec[0])
        x = self.orb2(x) + self.conv_enc2(self.up_enc1(enc[1])) + self.conv_dec2(self.up_dec1(dec[1]))
        return (self.orb3(x) + self.conv_enc3(self.up_enc2(enc[2]))
                + self.conv_dec3(self.up_dec2(dec[2])))


def _cat(parts_a, parts_b, dim: int):
    return [torch.cat((a, b), dim) for a, b in zip(parts_a, parts_b)]


class MPRNet(nn.Module):
    def __init__(self, config: MPRNetConfig, in_c: int = 3, out_c: int = 3):
        super().__init__()
        c, n = config, config.n_feat
        self.config = config
        act = nn.PReLU()  # one slope, shared by every block (the official model's single act)
        for i in (1, 2, 3):
            setattr(self, f"shallow_feat{i}", nn.Sequential(_conv(in_c, n, c.kernel_size, c.bias),
                                                            CAB(n, c, act)))
        self.stage1_encoder = Encoder(c, act, csff=False)
        self.stage1_decoder = Decoder(c, act)
        self.stage2_encoder = Encoder(c, act, csff=True)
        self.stage2_decoder = Decoder(c, act)
        self.stage3_orsnet = ORSNet(c, act)
        self.sam12 = SAM(n, c.bias)
        self.sam23 = SAM(n, c.bias)
        self.concat12 = _conv(2 * n, n, c.kernel_size, c.bias)
        self.concat23 = _conv(2 * n, n + c.scale_orsnetfeats, c.kernel_size, c.bias)
        self.tail = _conv(n + c.scale_orsnetfeats, out_c, c.kernel_size, c.bias)

    def _stage1(self, top, bottom):
        """Four quarters through stage 1; features joined back into halves."""
        w = top.shape[3] // 2
        feats = {}
        for name, half in (("top", top), ("bottom", bottom)):
            left = self.stage1_encoder(self.shallow_feat1(half[..., :w]))
            right = self.stage1_encoder(self.shallow_feat1(half[..., w:]))
            feats[name] = _cat(left, right, 3)
        return feats

    def forward(self, image):
        h, w = image.shape[2], image.shape[3]
        if not torch.jit.is_tracing() and (h % SIZE_MULTIPLE or w % SIZE_MULTIPLE):
            raise HinetDeployError(f"MPRNet takes heights and widths that are multiples of "
                                   f"{SIZE_MULTIPLE}, not {h}x{w}")
        halves = {"top": image[:, :, :h // 2], "bottom": image[:, :, h // 2:]}
        enc1 = self._stage1(halves["top"], halves["bottom"])
        dec1, stage1_images, sam_feats = {}, {}, {}
        for name, half in halves.items():
            dec1[name] = self.stage1_decoder(enc1[name])
            sam_feats[name], stage1_images[name] = self.sam12(dec1[name][0], half)
        enc2 = {}
        for name, half in halves.items():
            x = self.concat12(torch.cat((self.shallow_feat2(half), sam_feats[name]), 1))
            enc2[name] = self.stage2_encoder(x, enc1[name], dec1[name])
        enc2_whole = _cat(enc2["top"], enc2["bottom"], 2)
        dec2 = self.stage2_decoder(enc2_whole)
        sam3, stage2_image = self.sam23(dec2[0], image)
        x = self.concat23(torch.cat((self.shallow_feat3(image), sam3), 1))
        x = self.stage3_orsnet(x, enc2_whole, dec2)
        stage1_image = torch.cat((stage1_images["top"], stage1_images["bottom"]), 2)
        return [self.tail(x) + image, stage2_image, stage1_image]


def mprnet(task: str) -> MPRNet:
    """An MPRNet of the official configuration for `task`: deblur, denoise or derain (random
    weights; load an official checkpoint's state dict into it with strict=True)."""
    if task not in CONFIGS:
        raise HinetDeployError(f"unknown MPRNet task {task!r}; choose {', '.join(CONFIGS)}")
    return MPRNet(CONFIGS[task])


class _FinalImage(nn.Module):
    """Export wrapper: the final (stage-3) image alone, like the HINet graphs' `output`."""

    def __init__(self, net: MPRNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        return self.net(image)[0]


def export_mprnet_onnx(net: MPRNet, path, height: int, width: int, opset: int = 17,
                       tolerance: float = 1e-3) -> float:
    """Writes a fixed 1x3xHxW graph of the final image, verified with ONNX Runtime against PyTorch
    on a random input; returns the largest absolute difference. Written only if within tolerance."""
    import numpy as np
    import onnxruntime as ort

    from hinet_deploy.common.files import atomic_path

    wrapper = _FinalImage(net.eval())
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(wrapper, x, str(tmp), opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamo=False)
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(
            None, {INPUT_NAME: x.numpy()})[0]
        diff = float(np.abs(got - wrapper(x).numpy()).max())
        if not diff <= tolerance:
            raise HinetDeployError(f"MPRNet's ONNX output differs from PyTorch by {diff:.3g} "
                                   f"(tolerance {tolerance:g}); the graph was not written")
    return diff
