"""The embedded demo denoiser and the main job (`hinet-deploy demo`)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, TRAIN, add_gaussian_noise, load_photo
from conftest import REPO
from hinet_deploy.export.checkpoint import load_checkpoint
from hinet_deploy.export.shipped import DEMO_CHECKPOINT
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.metrics import psnr

MIN_GAIN_DB = 6.0  # the demo's promise: PSNR gain over the noisy input on held-out photographs


def test_demo_checkpoint_is_official_basicsr_format():
    raw = torch.load(DEMO_CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(raw) == {"params"}
    loaded = load_checkpoint(DEMO_CHECKPOINT)
    assert loaded.param_key == "params"
    assert (loaded.config.wf, loaded.config.hin_position_left, loaded.config.hin_position_right) \
        == (16, 0, 4)
    assert DEMO_CHECKPOINT.stat().st_size < 12 * 2**20


def test_held_out_photos_are_not_training_photos():
    assert not set(HELD_OUT) & set(TRAIN)


@pytest.mark.parametrize("name", HELD_OUT)
def test_denoises_held_out_photos(name):
    clean = load_photo(name)[:256, :320]  # a crop keeps the default suite fast
    noisy = add_gaussian_noise(clean, DEMO_NOISE_SIGMA, seed=11)
    with Restorer(DEMO_CHECKPOINT) as restore:
        restored = restore(noisy)
    gain = psnr(restored, clean) - psnr(noisy, clean)
    print(f"{name}: noisy {psnr(noisy, clean):.2f} dB -> restored {psnr(restored, clean):.2f} dB")
    assert gain >= MIN_GAIN_DB


def test_noise_is_what_it_says():
    clean = np.full((200, 200, 3), 128, np.uint8)
    noisy = add_gaussian_noise(clean, 25.0, seed=0).astype(float)
    assert abs(noisy.std() - 25.0) < 0.5 and abs(noisy.mean() - 128) < 0.5


def test_main_job_end_to_end(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "demo", "-o", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    for name in ["clean", "noisy", "restored", "side_by_side"]:
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert (tmp_path / "hinet-demo-denoise.onnx").exists()
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "dB" in line]
    assert len(rows) == len(HELD_OUT)
    gains = [float(row.split("|")[5].strip().split()[0]) for row in rows]
    assert min(gains) >= MIN_GAIN_DB


def test_a_photo_of_ones_own_gets_its_own_files_and_the_restore_line(tmp_path):
    """`demo --image X` writes X's own images, never over the held-out photo's, and the demo ends
    with the restore command to run on one's own files."""
    from PIL import Image

    photo = tmp_path / "beach.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), np.uint8)).save(photo)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "side_by_side.png").write_bytes(b"the held-out photo's")
    result = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "demo", "-o", str(out),
                             "--image", str(photo)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert (out / "side_by_side.png").read_bytes() == b"the held-out photo's"
    for name in ["clean", "noisy", "restored", "side_by_side"]:
        assert (out / f"beach.{name}.png").stat().st_size > 0
    graph = out / "hinet-demo-denoise.onnx"
    assert f"hinet-deploy restore YOUR_FILES -o restored/ --model {graph}" in result.stdout
