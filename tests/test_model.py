"""The reference model: official key layout for every variant, and the official forward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import GOPRO_LIKE, SIDD_LIKE, random_net
from hinet_deploy.export.model import HINet, HINetConfig
from hinet_deploy.export.variants import OFFICIAL_VARIANTS, infer_config, match_official


@pytest.mark.parametrize("name", list(OFFICIAL_VARIANTS))
def test_official_state_dict_loads_strictly(name, reference_variants):
    ref = reference_variants[name]
    config = HINetConfig(**ref["config"])
    assert config == OFFICIAL_VARIANTS[name].config
    with torch.device("meta"):
        net = HINet(config)
    state = {k: torch.empty(shape, device="meta") for k, shape in ref["state_dict"].items()}
    net.load_state_dict(state, strict=True, assign=True)  # raises on any key or shape mismatch
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == ref["state_dict"]
    assert sum(p.numel() for p in net.parameters()) == ref["n_params"]
    assert infer_config(state) == config
    assert name in match_official(config)


def _conv(sd, name, x, stride=1, padding=None):
    weight = sd[name + ".weight"]
    padding = weight.shape[-1] // 2 if padding is None else padding
    return F.conv2d(x, weight, sd.get(name + ".bias"), stride=stride, padding=padding)


def _block(sd, prefix, x, hin, enc=None, dec=None, down=False):
    y = _conv(sd, prefix + ".conv_1", x)
    if hin:
        half = y.shape[1] // 2
        normed = F.instance_norm(y[:, :half], weight=sd[prefix + ".norm.weight"],
                                 bias=sd[prefix + ".norm.bias"], eps=1e-5)
        y = torch.cat([normed, y[:, half:]], 1)
    y = F.leaky_relu(y, 0.2)
    y = F.leaky_relu(_conv(sd, prefix + ".conv_2", y), 0.2)
    y = y + _conv(sd, prefix + ".identity", x)
    if enc is not None:
        y = y + _conv(sd, prefix + ".csff_enc", enc) + _conv(sd, prefix + ".csff_dec", dec)
    if down:
        return _conv(sd, prefix + ".downsample", y, stride=2, padding=1), y
    return y


def _unet_decoder(sd, stage, x, skips):
    outs = []
    for j in range(len(skips)):
        up = F.conv_transpose2d(x, sd[f"up_path_{stage}.{j}.up.weight"],
                                sd[f"up_path_{stage}.{j}.up.bias"], stride=2)
        bridge = _conv(sd, f"skip_conv_{stage}.{j}", skips[-j - 1])
        x = _block(sd, f"up_path_{stage}.{j}.conv_block", torch.cat([up, bridge], 1), False)
        outs.append(x)
    return x, outs


def functional_hinet(sd, cfg, image):
    """The official HINet forward, written with torch.nn.functional straight off the state dict."""
    def hin(i):
        return cfg.hin_position_left <= i <= cfg.hin_position_right

    last = cfg.depth - 1
    x, encs = _conv(sd, "conv_01", image), []
    for i in range(last):
        x, skip = _block(sd, f"down_path_1.{i}", x, hin(i), down=True)
        encs.append(skip)
    x = _block(sd, f"down_path_1.{last}", x, hin(last))
    x, decs = _unet_decoder(sd, 1, x, encs)
    stage1 = _conv(sd, "sam12.conv2", x) + image
    sam = _conv(sd, "sam12.conv1", x) * torch.sigmoid(_conv(sd, "sam12.conv3", stage1)) + x
    y, blocks = _conv(sd, "cat12", torch.cat([_conv(sd, "conv_02", image), sam], 1)), []
    for i in range(last):
        y, skip = _block(sd, f"down_path_2.{i}", y, hin(i), encs[i], decs[-i - 1], down=True)
        blocks.append(skip)
    y = _block(sd, f"down_path_2.{last}", y, hin(last))
    y, _ = _unet_decoder(sd, 2, y, blocks)
    return stage1, _conv(sd, "last", y) + image


@pytest.mark.parametrize("config", [GOPRO_LIKE, SIDD_LIKE, HINetConfig(wf=12, hin_position_left=1,
                                                                       hin_position_right=2)])
def test_forward_matches_functional_reference(config):
    net = random_net(config, seed=3)
    image = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = net(image)
        want = functional_hinet(net.state_dict(), config, image)
    for g, w in zip(got, want):
        assert g.shape == image.shape
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)


def test_hin_block_counts_of_official_layouts():
    assert OFFICIAL_VARIANTS["gopro"].config.hin_block_count() == 4
    assert OFFICIAL_VARIANTS["sidd-1x"].config.hin_block_count() == 10
