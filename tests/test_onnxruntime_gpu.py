"""ONNX Runtime's GPU build as a backend (the `gpu` extra): its refusal where it cannot run, the
extra resolving from the package index, and, on a machine with a GPU, its output against ONNX
Runtime on the CPU with images staying on the GPU."""
from __future__ import annotations

import json
import subprocess
import sys
import venv

import numpy as np
import pytest

from conftest import REPO
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.backends import BACKENDS


def _cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_the_cpu_build_is_refused_in_one_line_never_run_on_the_cpu(small_onnx, tmp_path):
    if _cuda_provider():
        pytest.skip("this onnxruntime is the GPU build: the refusal of the CPU build is not seen")
    with pytest.raises(HinetDeployError, match=r"this onnxruntime is a CPU build .*\[gpu\]"):
        Restorer(small_onnx, backend="onnxruntime-gpu")
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "p.png")
    run = subprocess.run([sys.executable, "-m", "hinet_deploy.cli", "restore", str(tmp_path / "p.png"),
                          "-o", str(tmp_path / "out"), "--model", str(small_onnx), "--backend",
                          "onnxruntime-gpu"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "cannot run small.onnx on the GPU" in run.stderr and not (tmp_path / "out").exists()


def test_an_unknown_provider_is_one_line(small_onnx):
    with pytest.raises(HinetDeployError, match="choose cuda or tensorrt-rtx"):
        Restorer(small_onnx, backend="onnxruntime-gpu", provider="rocm")


def test_it_is_a_contender_only_where_it_runs(tmp_path):
    from hinet_deploy.runtime.backends import ModelFiles

    models = ModelFiles(tmp_path / "m.pth", {"fp32": tmp_path / "m.onnx",
                                             "int8": tmp_path / "i.onnx"})
    runs = BACKENDS["onnxruntime-gpu"].check_runs(models)
    assert runs == ([] if not _cuda_provider() else [("fp32", tmp_path / "m.onnx", ())])


def test_the_gpu_extra_resolves_from_the_package_index(tmp_path):
    """pip's resolver for this machine's platform with the `gpu` extra (metadata only: the CUDA
    wheels are over a GB): ONNX Runtime's GPU build with cuDNN, the CUDA runtime and cuBLAS."""
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                          "--quiet", "--target", str(tmp_path / "t"), "--report", str(report),
                          f"{REPO}[gpu]"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert {"onnxruntime-gpu", "nvidia-cublas", "nvidia-cuda-runtime"} <= names, names
    assert any(n.startswith("nvidia-cudnn") for n in names)
    assert "torch" not in names


@pytest.mark.slow
def test_the_gpu_extra_installs_lists_its_providers_and_refuses_without_a_gpu(tmp_path):
    """Opt-in (--run-slow: over a GB of CUDA wheels): the extra installed in a fresh environment
    offers the CUDA provider; without a GPU the backend refuses in one line."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", f"{REPO}[gpu]"],
                             capture_output=True, text=True, timeout=3000)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = subprocess.run([python, "-c", "import onnxruntime as o; print(o.get_available_providers())"],
                           capture_output=True, text=True)
    assert "CUDAExecutionProvider" in probe.stdout, probe.stderr


@pytest.mark.gpu
def test_on_a_gpu_it_matches_onnxruntime_on_the_cpu_and_keeps_tensors_there(demo_onnx):
    torch = pytest.importorskip("torch")
    if not (torch.cuda.is_available() and _cuda_provider()):
        pytest.skip("needs a CUDA GPU and onnxruntime-gpu (the gpu extra)")
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    with Restorer(demo_onnx, backend="onnxruntime") as cpu, \
            Restorer(demo_onnx, backend="onnxruntime-gpu") as gpu:
        expected = cpu(image)
        assert np.abs(gpu(image).astype(int) - expected).max() <= 1
        on_gpu = torch.from_numpy(image).cuda()
        out = gpu(on_gpu)
        assert out.is_cuda and np.abs(out.cpu().numpy().astype(int) - expected).max() <= 1
