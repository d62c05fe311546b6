"""ONNX Runtime's GPU build against ONNX Runtime on the CPU and PyTorch on the GPU, side by side.

    python benchmarks/onnxruntime_gpu.py [--ckpt demo|X.pth] [--size 256 256] [--repeats 9]

Needs an NVIDIA GPU and the `gpu` extra (ONNX Runtime's GPU build) next to torch with CUDA. One
process; the demo model (or the checkpoint given) exported once; the contenders take turns in
alternated rounds (checks.timing) after a warm-up: ONNX Runtime CUDA on FP32 and FP16 graphs
(numpy in and out, and torch tensors bound on the GPU), PyTorch FP32 on the GPU, ONNX Runtime on
the CPU. Printed: the GPU, its driver, the ONNX Runtime and torch versions, median and spread per
contender, and each one's speed-up over ONNX Runtime on the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default="demo")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from hinet_deploy.build.flow import GraphRequest, precision_graphs
    from hinet_deploy.checks.timing import alternated_rounds
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT
    from hinet_deploy.runtime.backends import open_backend

    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("needs a CUDA GPU, torch with CUDA and ONNX Runtime's GPU build (the gpu "
                         "extra)")
    ckpt = DEMO_CHECKPOINT if args.ckpt == "demo" else Path(args.ckpt)
    height, width = args.size
    x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    on_gpu = torch.from_numpy(x).cuda()
    with tempfile.TemporaryDirectory() as tmp:
        graphs = dict(precision_graphs(GraphRequest(ckpt=ckpt, out_dir=Path(tmp)), ("fp32", "fp16")))
        backends = {
            "onnxruntime-gpu:fp32 (numpy)": open_backend(graphs["fp32"], "onnxruntime-gpu"),
            "onnxruntime-gpu:fp16 (numpy)": open_backend(graphs["fp16"], "onnxruntime-gpu"),
            "pytorch:fp32 (cuda)": open_backend(ckpt, "pytorch", device="cuda"),
            "onnxruntime:fp32 (cpu)": open_backend(graphs["fp32"], "onnxruntime",
                                                   providers=("CPUExecutionProvider",)),
        }
        runners = {name: (lambda b=b: b.run(x)) for name, b in backends.items()}
        gpu_graph = backends["onnxruntime-gpu:fp32 (numpy)"]
        runners["onnxruntime-gpu:fp32 (tensor bound)"] = lambda: gpu_graph.run_device(on_gpu)
        for run in runners.values():
            run()  # warm-up: kernels chosen, memory allocated
        times = alternated_rounds(runners, args.repeats)
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"GPU: {torch.cuda.get_device_name()} (driver {driver}); onnxruntime {ort.__version__}, "
          f"torch {torch.__version__}; {width}x{height}, batch 1, {args.repeats} alternated rounds")
    cpu = statistics.median(times["onnxruntime:fp32 (cpu)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:38s} median {median * 1e3:8.2f} ms  spread {(max(values) - min(values)) * 1e3:7.2f} "
              f"ms  {cpu / median:6.1f}x ONNX Runtime CPU")


if __name__ == "__main__":
    main()
