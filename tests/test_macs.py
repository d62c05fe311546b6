"""MAC and parameter counts from the ONNX graph, against counts taken from PyTorch module hooks."""
from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
import torch
from torch import nn

from conftest import GOPRO_LIKE, REPO, SIDD_LIKE, random_net
from hinet_deploy.export.checkpoint import LoadedModel, random_model
from hinet_deploy.export.macs import count_macs
from hinet_deploy.export.onnx_export import export_onnx


def hook_counts(net, height, width):
    """(exact MACs, paper-convention MACs) from the modules PyTorch actually runs."""
    exact = paper = 0

    def on_forward(module, inputs, output):
        nonlocal exact, paper
        k = module.kernel_size[0] * module.kernel_size[1]
        bias = output.numel() if module.bias is not None else 0
        if isinstance(module, nn.ConvTranspose2d):
            exact += inputs[0].numel() * module.out_channels // module.groups * k
            paper += output.numel() * module.in_channels * k + bias
        else:
            macs = output.numel() * module.in_channels // module.groups * k
            exact += macs
            paper += macs + bias

    handles = [m.register_forward_hook(on_forward) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        net(torch.zeros(1, 3, height, width))
    for h in handles:
        h.remove()
    return exact, paper


def _graph(loaded, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(loaded, path, verify_shapes=[], log=lambda m: None)
    return onnx.load(str(path))


@pytest.mark.parametrize("config", [GOPRO_LIKE, SIDD_LIKE])
@pytest.mark.parametrize("size", [(256, 256), (720, 1280)])
def test_counts_match_module_hooks(config, size, tmp_path):
    net = random_net(config)
    loaded = LoadedModel(net, config, [], None, None)
    count = count_macs(_graph(loaded, tmp_path), *size)
    assert (count.macs, count.macs_paper) == hook_counts(net, *size)
    assert count.params == sum(p.numel() for p in net.parameters())


def test_sidd_half_width_matches_findings(tmp_path, reference_variants):
    count = count_macs(_graph(random_model("sidd-0.5x"), tmp_path), 256, 256)
    assert count.params == reference_variants["sidd-0.5x"]["n_params"]
    assert round(count.macs / 1e9, 1) == 39.5  # SIDD-0.5x: 39.5 G exact (counted once with forward hooks)


@pytest.mark.slow
def test_gopro_reproduces_the_paper(tmp_path, reference_variants):
    count = count_macs(_graph(random_model("gopro"), tmp_path), 256, 256)
    assert count.params == reference_variants["gopro"]["n_params"]
    assert round(count.macs / 1e9, 2) == 157.60  # exact conv + deconv MACs (paper: 170.7 G thop convention)
    assert round(count.macs_paper / 1e9, 1) == 170.7  # the paper's Table (thop convention)


def test_cli_json(small_onnx):
    result = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "macs", "--onnx",
                             str(small_onnx), "--size", "64", "96", "--json"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"params", "macs", "macs_paper"} <= set(data)
    assert (data["height"], data["width"]) == (64, 96)
    assert data["macs_paper"] > data["macs"] > 0
