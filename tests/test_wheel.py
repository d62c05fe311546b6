"""The wheel as users install it: one import root, its data inside, a runtime without torch.

Builds the wheel from this checkout, then:
- a fresh virtual environment gets `WHEEL[onnxruntime]` (no torch) and, inside a folder that has
  its own `export.py` and `runtime/` package, restores an image with the exported demo graph, equal
  to the checkout's result; `hinet-deploy --help` works there;
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
from hinet_deploy.export.checkpoint import load_checkpoint
from hinet_deploy.export.onnx_export import export_onnx
from hinet_deploy.export.variants import DEMO_CHECKPOINT
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


def test_runtime_from_the_wheel_without_torch(wheel, tmp_path):
    graph = tmp_path / "demo.onnx"
    export_onnx(load_checkpoint(DEMO_CHECKPOINT), graph, log=lambda m: None)
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    with Restorer(graph) as restore:
        expected = restore(image)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    line = readme_line("pip install 'dist/")  # the README's wheel line, run beside dist/
    assert f"dist/{wheel.name}[onnxruntime]" in line
    install = subprocess.run([str(python), "-m", *shlex.split(line), "-q"], cwd=wheel.parent.parent,
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    project = _user_project(tmp_path / "project")
    (project / "restore.py").write_text(RESTORE)
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run([str(python), "restore.py", str(graph), str(tmp_path / "image.npy"),
                          str(tmp_path / "out.npy")], cwd=project, capture_output=True, text=True,
                         env=clean_env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no torch" in run.stdout  # the [onnxruntime] install pulled no torch
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    helped = subprocess.run([str(env_dir / "bin" / "hinet-deploy"), "--help"], cwd=project,
                            capture_output=True, text=True, env=clean_env)
    assert helped.returncode == 0 and "export" in helped.stdout, helped.stderr
    missing = subprocess.run([str(env_dir / "bin" / "hinet-deploy"), "macs", "--variant", "gopro"],
                             cwd=project, capture_output=True, text=True, env=clean_env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].endswith("pip install 'hinet-deploy[export]'")


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
