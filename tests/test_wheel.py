"""The wheel as users install it: one import root, its data inside, a runtime without torch.

Builds the wheel from this checkout, then:
- a fresh virtual environment gets `WHEEL[onnxruntime,video]` (no torch) and, inside a folder that
  has its own `export.py` and `runtime/` package, restores an image with the exported demo graph,
  equal to the checkout's result; its installed `hinet-deploy restore` restores a photo and a video,
  and what needs torch is one line naming the wheel's own install line;
- the wheel alone (no editable install, no checkout on the path) runs `hinet-deploy demo` from the
  shipped checkpoint.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from hinet_deploy.runtime import Restorer

RESTORE = """
import sys
import numpy as np
import export, runtime  # the user's own modules, which must not get in the way
from hinet_deploy.runtime import Restorer
assert export.MINE and runtime.MINE
with Restorer(sys.argv[1]) as restore:
    np.save(sys.argv[3], restore(np.load(sys.argv[2])))
try:
    import torch
except ImportError:
    print("no torch")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: setuptools leaves build/ and *.egg-info where it builds
    anywhere = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache",
                                      "*.onnx", "*.engine")

    def ignore(folder, names):  # the outputs' build/ at the top, not the package's build/ room
        return anywhere(folder, names) | ({"build"} if Path(folder) == REPO else set())

    shutil.copytree(REPO, source, ignore=ignore)
    built = subprocess.run([sys.executable, "-m", *shlex.split(readme_line("pip wheel"))],
                           cwd=source, capture_output=True, text=True)  # as the README says
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = (source / "dist").glob("hinet_deploy-*.whl")
    return path


def readme_line(start: str) -> str:
    """The README's install line that starts with `start` (its code block under "Installing as a
    library"), so that the test runs what users are told to run."""
    section = (REPO / "README.md").read_text().split("### Installing as a library", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return next(line.split("#")[0].strip() for line in block.splitlines()
                if line.strip().startswith(start))


def test_wheel_has_one_import_root_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"hinet_deploy"}
    assert "hinet_deploy/export/weights/hinet-demo-denoise.pth" in names
    assert "hinet_deploy/engines/plugin/hin_leaky.cu" in names
    assert "hinet_deploy/runtime/restorer.py" in names


def _user_project(root: Path) -> Path:
    """A user's folder with modules named like the stages used to be."""
    (root / "runtime").mkdir(parents=True)
    (root / "runtime" / "__init__.py").write_text("MINE = True\n")
    (root / "export.py").write_text("MINE = True\n")
    return root


@pytest.fixture(scope="module")
def runtime_env(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the README's runtime line: the wheel with
    `[onnxruntime,video]`, what a Jetson user installs to keep JetPack's torch."""
    env_dir = tmp_path_factory.mktemp("runtime-venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    line = readme_line("pip install 'dist/")  # the README's wheel line, run beside dist/
    assert f"dist/{wheel.name}[onnxruntime,video]" in line
    install = subprocess.run([str(env_dir / "bin" / "python"), "-m", *shlex.split(line), "-q"],
                             cwd=wheel.parent.parent, capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    return env_dir


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_runtime_from_the_wheel_without_torch(runtime_env, demo_onnx, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    with Restorer(demo_onnx) as restore:
        expected = restore(image)

    python = runtime_env / "bin" / "python"
    project = _user_project(tmp_path / "project")
    (project / "restore.py").write_text(RESTORE)
    run = subprocess.run([str(python), "restore.py", str(demo_onnx), str(tmp_path / "image.npy"),
                          str(tmp_path / "out.npy")], cwd=project, capture_output=True, text=True,
                         env=CLEAN_ENV)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no torch" in run.stdout  # the runtime install pulled no torch
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    helped = subprocess.run([str(runtime_env / "bin" / "hinet-deploy"), "--help"], cwd=project,
                            capture_output=True, text=True, env=CLEAN_ENV)
    assert helped.returncode == 0 and "export" in helped.stdout, helped.stderr


def _clip(path: Path, frames: int = 6) -> None:
    """A small H.264 + AAC mp4, made with PyAV."""
    import fractions

    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        rng = np.random.default_rng(1)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), np.uint8), "rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 12)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for i in range(12):
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
            sound.sample_rate, sound.pts = 48000, i * 1024
            out.mux(audio.encode(sound))
        out.mux(audio.encode(None))


def test_restore_cli_from_the_runtime_install(runtime_env, wheel, demo_onnx, tmp_path):
    """The installed command restores a photo and a video with torch absent; `--model demo`, which
    needs torch, is one line naming the extra and the install this package came from."""
    pytest.importorskip("av")
    from PIL import Image

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), np.uint8)).save(
        inputs / "photo.png")
    _clip(inputs / "clip.mp4")
    command = str(runtime_env / "bin" / "hinet-deploy")
    run = subprocess.run([command, "restore", str(inputs), "-o", str(tmp_path / "out"), "--model",
                          str(demo_onnx), "--quiet"], cwd=tmp_path, capture_output=True,
                         text=True, env=CLEAN_ENV)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "restored 2" in run.stdout
    with Image.open(tmp_path / "out" / "photo.png") as restored:
        assert restored.size == (56, 40)
    probe = subprocess.run([str(runtime_env / "bin" / "python"), "-c",
                            "import av, sys; c = av.open(sys.argv[1]); "
                            "print(c.streams.video[0].frames, len(c.streams.audio))",
                            str(tmp_path / "out" / "clip.mp4")], capture_output=True, text=True)
    assert probe.stdout.split() == ["6", "1"], probe.stderr
    torch = subprocess.run([str(runtime_env / "bin" / "python"), "-c", "import torch"],
                           capture_output=True, text=True)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr

    demo = subprocess.run([command, "restore", str(inputs / "photo.png"), "-o",
                           str(tmp_path / "demo-out"), "--model", "demo"], cwd=tmp_path,
                          capture_output=True, text=True, env=CLEAN_ENV)
    assert demo.returncode == 2 and "Traceback" not in demo.stderr
    (line,) = demo.stderr.strip().splitlines()  # one line, and no demo note before it
    assert "needs torch" in line and f"{wheel.name}[export]'" in line, line
    assert not (tmp_path / "demo-out").exists()
    missing = subprocess.run([command, "macs", "--variant", "gopro"], cwd=tmp_path,
                             capture_output=True, text=True, env=CLEAN_ENV)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"{wheel.name}[export]'" in missing.stderr.strip().splitlines()[-1]


def test_demo_runs_from_the_wheel_alone(wheel, tmp_path):
    """Unpacked with --target (no editable install, no checkout on the path): the demo finds its
    checkpoint inside the package."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    project = _user_project(tmp_path / "project")
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import hinet_deploy.export as e; print(e.__file__)"],
                           cwd=project, capture_output=True, text=True, env=env)
    assert where.stdout.strip().startswith(str(target)), where.stderr
    run = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "demo", "-o", "out"],
                         cwd=project, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (project / "out" / "side_by_side.png").is_file()


# JetPack 6: Ubuntu 22.04 on aarch64 (glibc 2.35), Python 3.10. What pip's resolver takes for the
# runtime extras there, from the built wheel and the package index alone.
JETPACK_6 = ["--platform", "manylinux_2_35_aarch64", "--platform", "manylinux_2_28_aarch64",
             "--platform", "manylinux_2_17_aarch64", "--platform", "manylinux2014_aarch64",
             "--python-version", "3.10", "--implementation", "cp", "--only-binary=:all:"]


def test_the_jetson_line_resolves_for_jetpack_6(wheel, tmp_path):
    """The README's Jetson row, checked: the runtime extras resolve to aarch64 wheels for Python
    3.10 and pull no torch (JetPack's own stays) and no TensorRT (JetPack brings it)."""
    import json

    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                          "--quiet", *JETPACK_6, "--target", str(tmp_path / "target"), "--report",
                          str(report), f"{wheel}[onnxruntime,video,jetson]"],
                         capture_output=True, text=True, timeout=600)
    if run.returncode != 0 and "No matching distribution" not in run.stderr and \
            ("Could not fetch" in run.stderr or "connection" in run.stderr.lower()):
        pytest.skip(f"the package index is not reachable: {run.stderr.strip()[-200:]}")
    assert run.returncode == 0, run.stderr[-2000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"hinet-deploy", "numpy", "pillow", "onnxruntime", "av", "cuda-bindings"} <= names
    assert not names & {"torch", "tensorrt", "tensorrt-rtx", "ray", "openvino"}, names
