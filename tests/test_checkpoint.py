"""Checkpoint loading: the formats users have, and clear refusals of everything else."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile

import pytest
import torch

from conftest import GOPRO_LIKE, REPO, SIDD_LIKE, random_net
from hinet_deploy.export.checkpoint import load_checkpoint, save_basicsr
from hinet_deploy.common.errors import HinetDeployError


@pytest.fixture(scope="module")
def state():
    return random_net(SIDD_LIKE, seed=5).state_dict()


def _assert_same_weights(loaded, state):
    got = loaded.net.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(got[k], v.float(), rtol=0, atol=0)


@pytest.mark.parametrize("wrap, key", [
    (lambda sd: {"params": sd}, "params"),
    (lambda sd: {"params_ema": sd}, "params_ema"),
    (lambda sd: {"params": {k: v * 0 for k, v in sd.items()}, "params_ema": sd}, "params_ema"),
    (lambda sd: sd, None),
    (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, "state_dict"),
])
def test_accepted_formats(tmp_path, state, wrap, key):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(state), path)
    loaded = load_checkpoint(path)
    assert loaded.param_key == key
    assert loaded.config == SIDD_LIKE
    assert loaded.official_names == []
    _assert_same_weights(loaded, state)


def test_half_precision_weights_load_as_float(tmp_path, state):
    path = tmp_path / "half.pth"
    save_basicsr({k: v.half() for k, v in state.items()}, path)
    loaded = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    torch.testing.assert_close(loaded.net.conv_01.weight, state["conv_01.weight"].half().float())


def test_infers_gopro_layout(tmp_path):
    path = tmp_path / "g.pth"
    save_basicsr(random_net(GOPRO_LIKE).state_dict(), path)
    loaded = load_checkpoint(path)
    assert (loaded.config.hin_position_left, loaded.config.hin_position_right) == (3, 4)
    assert loaded.size_multiple == 16


def _error(path, variant=None) -> str:
    with pytest.raises(HinetDeployError) as info:
        load_checkpoint(path, variant)
    return str(info.value)


def test_missing_file(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.pth")


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(bytes(range(256)) * 10)
    assert "cannot read" in _error(path) and "not a PyTorch checkpoint" in _error(path)


def test_truncated_file(tmp_path, small_ckpt):
    path = tmp_path / "cut.pth"
    path.write_bytes(small_ckpt.read_bytes()[:5000])
    assert "cannot read" in _error(path)


def test_pickle_that_runs_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:  # the layout torch.save writes, holding a hostile pickle
        zf.writestr("evil/data.pkl", pickle.dumps({"params": Exploit()}, protocol=2))
        zf.writestr("evil/byteorder", "little")
        zf.writestr("evil/version", "3\n")
    message = _error(path)
    assert "refused to load" in message and "io.open" in message
    assert not marker.exists()


def test_os_system_through_torch_save_is_named_unsafe(tmp_path):
    """What a real attacker writes: torch.save of an object whose __reduce__ calls os.system.
    torch 2.13 words its refusal differently ("... whose module posix is blocked"); the check reads
    the pickle itself, so the wording does not matter."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"params": Exploit()}, path)
    message = _error(path)
    assert message.startswith(f"refused to load {path}: unpickling it would run ")
    assert "system" in message and "unsafe" in message and "corrupt" not in message
    assert not marker.exists()


def test_not_a_hinet(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"params": {"backbone.conv.weight": torch.zeros(3, 3, 3, 3)}}, path)
    message = _error(path)
    assert "not a HINet checkpoint" in message and "--variant" in message


def test_missing_and_unexpected_keys_are_summarised(tmp_path, state):
    broken = dict(state)
    for k in [k for k in broken if k.startswith("sam12.")]:
        del broken[k]
    broken["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    save_basicsr(broken, path)
    message = _error(path)
    assert "6 missing keys (sam12.conv1.weight" in message
    assert "1 unexpected keys (extra.weight)" in message


def test_wrong_variant_names_shape_mismatches(small_ckpt):
    message = _error(small_ckpt, "sidd-0.5x")
    assert "does not fit variant sidd-0.5x" in message
    assert "shape mismatches (file vs model: conv_01.weight (8, 3, 3, 3) vs (32, 3, 3, 3)" in message


def test_unknown_variant(small_ckpt):
    assert "unknown variant 'gopr0'" in _error(small_ckpt, "gopr0")


def test_cli_prints_one_line_and_exits_non_zero(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_text("not a checkpoint")
    result = subprocess.run([sys.executable, str(REPO / "export/to_onnx.py"), "--ckpt", str(path),
                             "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot read") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_a_stand_in_is_the_official_architecture_with_random_weights(tmp_path, reference_variants,
                                                                     capsys):
    from hinet_deploy.cli import main

    assert main(["stand-in", "sidd-0.5x", "-o", str(tmp_path / "s.pth")]) == 0
    assert "random weights (22.18 M parameters" in capsys.readouterr().out
    loaded = load_checkpoint(tmp_path / "s.pth")
    assert loaded.official_names == ["sidd-0.5x"]
    official = reference_variants["sidd-0.5x"]
    assert set(loaded.net.state_dict()) == set(official["state_dict"])
    assert sum(p.numel() for p in loaded.net.parameters()) == official["n_params"]
