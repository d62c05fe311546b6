"""The fused HIN kernel against the unfused ops, on one GPU, side by side in one run.

    python benchmarks/hin_kernel.py [--repeats 50] [--rounds 7] [--csv out.csv]

For each shape (the HIN blocks of HINet at 256x256 and 1280x720, plus odd sizes) and each of FP32 and
FP16 it
- launches the kernel exactly as the TensorRT plugin does (engines.plugin.hin_plugin.HinKernel: NVRTC
  for this GPU, cuda-python launch) and compares it with the numpy oracle (export.hin_fusion);
- times it (splits 0: one block per plane cached in shared memory; n: each plane over n blocks)
  against PyTorch's unfused chain on the same GPU (chunk -> instance_norm with affine ->
  cat -> leaky_relu, the ONNX pattern of a HIN block), with CUDA events, rounds alternating;
- prints medians, the fused/unfused speed-up and the kernel's effective bandwidth (bytes read and
  written once each: the least any implementation must move).
Needs a CUDA GPU, torch with CUDA and cuda-bindings.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np


from hinet_deploy.engines.plugin.hin_plugin import HinKernel, launch_plan, workspace_bytes  # noqa: E402
from hinet_deploy.export.hin_fusion import hin_reference  # noqa: E402

EPS, SLOPE = 1e-5, 0.2
# HIN blocks of HINet's first subnetwork (wf=64): levels 0-2 at 256x256 and at 1280x720, then
# sizes whose H*W is not a multiple of the block size, and a batch.
SHAPES = [(1, 64, 256, 256), (1, 128, 128, 128), (1, 256, 64, 64),
          (1, 64, 720, 1280), (1, 128, 360, 640), (1, 256, 180, 320),
          (1, 64, 37, 53), (4, 128, 61, 67)]
TOLERANCE = {np.float32: 1e-4, np.float16: 2e-2}


def unfused(torch, x, gamma, beta):
    a, b = x.chunk(2, dim=1)
    a = torch.nn.functional.instance_norm(a, weight=gamma, bias=beta, eps=EPS)
    return torch.nn.functional.leaky_relu(torch.cat([a, b], 1), SLOPE)


def time_ms(torch, fn, repeats: int) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / repeats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="launches per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.zeros(1, device="cuda")  # makes the primary context current for cuda-python
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    rng = np.random.default_rng(0)
    rows, failures = [], 0
    header = (f"{'shape':>20} {'dtype':>7} {'splits':>6} {'max err':>9} {'fused ms':>9} {'torch ms':>9} "
              f"{'speed-up':>8} {'GB/s':>7}")
    print(header)
    for shape in SHAPES:
        n, c, h, w = shape
        gamma = rng.normal(1, 0.3, c // 2).astype(np.float32)
        beta = rng.normal(0, 0.3, c // 2).astype(np.float32)
        kernel = HinKernel(gamma, beta)
        for dtype in (np.float32, np.float16):
            host = rng.normal(0.5, 3.0, shape).astype(dtype)
            x = torch.from_numpy(host).cuda()
            y = torch.empty_like(x)
            g = torch.from_numpy(gamma).cuda()
            bt = torch.from_numpy(beta).cuda()
            stream = torch.cuda.current_stream().cuda_stream
            workspace = torch.empty(max(workspace_bytes(shape), 4), dtype=torch.uint8,
                                    device="cuda")

            def fused():
                kernel.launch(dtype, shape, x.data_ptr(), y.data_ptr(), EPS, SLOPE, stream,
                              workspace.data_ptr())

            def reference():
                # instance_norm wants the affine in the input's dtype
                return unfused(torch, x, g.to(x.dtype), bt.to(x.dtype))

            fused()
            torch.cuda.synchronize()
            want = hin_reference(host.astype(np.float32), gamma, beta, EPS, SLOPE)
            err = float(np.abs(y.cpu().numpy().astype(np.float32) - want).max())
            ok = np.allclose(y.cpu().numpy().astype(np.float32), want,
                             rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
            failures += not ok
            for fn in (fused, reference):  # warm-up
                time_ms(torch, fn, 3)
            times = {"fused": [], "torch": []}
            for r in range(args.rounds):
                order = [("fused", fused), ("torch", reference)]
                for name, fn in (order if r % 2 == 0 else order[::-1]):
                    times[name].append(time_ms(torch, fn, args.repeats))
            fused_ms = statistics.median(times["fused"])
            torch_ms = statistics.median(times["torch"])
            gbps = 2 * x.numel() * x.element_size() / fused_ms / 1e6
            row = dict(shape="x".join(map(str, shape)), dtype=np.dtype(dtype).name,
                       splits=launch_plan(shape)[0], max_err=err,
                       ok=ok, fused_ms=fused_ms, torch_ms=torch_ms, speedup=torch_ms / fused_ms,
                       gbps=gbps)
            rows.append(row)
            print(f"{row['shape']:>20} {row['dtype']:>7} {row['splits']:>6} {err:9.2e}{'' if ok else '!'} "
                  f"{fused_ms:9.4f} {torch_ms:9.4f} {row['speedup']:7.2f}x {gbps:7.0f}",
                  flush=True)
    speedups = [r["speedup"] for r in rows]
    print(f"median speed-up over PyTorch's unfused ops: {statistics.median(speedups):.2f}x "
          f"(min {min(speedups):.2f}x, max {max(speedups):.2f}x); "
          f"{failures} shape/dtype pairs outside tolerance")
    if args.csv:
        import csv

        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
