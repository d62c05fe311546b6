"""Engines with the fused HIN plugin against engines without it, side by side on one NVIDIA GPU.

    python benchmarks/hin_plugin_engine.py [--precisions fp16 fp32] [--rounds 9] [--repeats 20]

For the demo width (wf 16, HIN at every encoder level: 10 blocks) and the gopro width (wf 64, random
weights, 4 blocks) it builds, with the TensorRT installed here, one engine from the plain graph and
one from the fused graph (`build --hin-plugin`) per precision, then at 256x256 and 1280x720:
- checks the plugin engine's output against the unfused engine's on the same input (max abs
  difference and PSNR), and both against PyTorch FP32;
- times them in alternated rounds (each round `--repeats` runs of each engine, the first of each
  round rotating) and prints medians, spreads and the ratio of medians (unfused / plugin: above 1
  means the plugin is faster).
Prints the GPU, its driver and the TensorRT that ran. The way to verify the plugin on one's own RTX
(TensorRT-RTX) or Jetson (full TensorRT); on a machine where engines cannot run it says why and
exits 2.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hinet_deploy.build.flow import GraphRequest, build
from hinet_deploy.checks.timing import alternated_rounds, device_name
from hinet_deploy.engines.build import BuildOptions, Profile
from hinet_deploy.engines.targets import engines_unavailable
from hinet_deploy.export.checkpoint import random_model, save_basicsr
from hinet_deploy.export.shipped import DEMO_CHECKPOINT
from hinet_deploy.runtime.backends import TensorRtBackend, TorchBackend
from hinet_deploy.runtime.metrics import psnr

SIZES = ((256, 256), (720, 1280))  # (H, W): the paper's crop and HD
PROFILE = Profile(min=(1, 64, 64), opt=(1, 256, 256), max=(1, 720, 1280))


def driver_version() -> str:
    from cuda.bindings import runtime as rt

    err, version = rt.cudaDriverGetVersion()
    return f"CUDA driver API {version // 1000}.{version % 1000 // 10}" if not int(err) else "unknown"


def checkpoints(folder: Path) -> dict[str, Path]:
    gopro = folder / "gopro-random.pth"
    save_basicsr(random_model("gopro").net.state_dict(), gopro)
    return {"demo (wf 16, 10 HIN blocks)": DEMO_CHECKPOINT, "gopro (wf 64, 4 HIN blocks)": gopro}


def engine(ckpt: Path, precision: str, plugin: bool, folder: Path) -> Path:
    req = GraphRequest(ckpt=ckpt, precision=precision, hin_plugin=plugin,
                       out_dir=folder / ("plugin" if plugin else "plain"))
    path, sidecar = build(req, None, None, BuildOptions(profile=PROFILE))
    if plugin and not sidecar.hin_plugin:
        raise SystemExit(f"the plugin engine was built without the plugin: "
                         f"{sidecar.facts.get('hin_plugin_unavailable')}")
    return path


def compare(name: str, ckpt: Path, precision: str, folder: Path, args) -> list[str]:
    plain = TensorRtBackend(engine(ckpt, precision, False, folder))
    fused = TensorRtBackend(engine(ckpt, precision, True, folder))
    reference = TorchBackend(ckpt, device="cuda")
    rows = []
    for height, width in SIZES:
        x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
        a, b, ref = plain.run(x), fused.run(x), reference.run(x)
        runners = {"plain": lambda: [plain.run(x) for _ in range(args.repeats)],
                   "plugin": lambda: [fused.run(x) for _ in range(args.repeats)]}
        times = alternated_rounds(runners, args.rounds)
        ms = {k: [1000 * t / args.repeats for t in v] for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in ms.items()}
        rows.append(
            f"| {name} | {precision} | {width}x{height} | {np.abs(a - b).max():.2e} | "
            f"{psnr(b, a):.1f} dB | {psnr(b, ref):.1f} / "
            f"{psnr(a, ref):.1f} dB | {med['plain']:.3f} ({min(ms['plain']):.3f}-"
            f"{max(ms['plain']):.3f}) | {med['plugin']:.3f} ({min(ms['plugin']):.3f}-"
            f"{max(ms['plugin']):.3f}) | {med['plain'] / med['plugin']:.2f}x |")
    for backend in (plain, fused, reference):
        backend.close()
    return rows


def build_only(precisions) -> int:
    with tempfile.TemporaryDirectory(prefix="hin-plugin-bench-") as tmp:
        for name, ckpt in checkpoints(Path(tmp)).items():
            for precision in precisions:
                for plugin in (False, True):
                    start = time.perf_counter()
                    path = engine(ckpt, precision, plugin, Path(tmp) / name.split()[0])
                    facts = _facts(path)
                    print(f"{name} {precision} {'plugin' if plugin else 'plain'}: "
                          f"{path.stat().st_size / 2**20:.1f} MB, {facts['plugin_layers']} plugin "
                          f"layers, built in {time.perf_counter() - start:.1f} s")
    return 0


def _facts(path: Path) -> dict:
    from hinet_deploy.engines.sidecar import read_sidecar

    return read_sidecar(path).facts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["fp16", "fp32"],
                        choices=("fp32", "fp16"))
    parser.add_argument("--rounds", type=int, default=9, help="alternated timed rounds")
    parser.add_argument("--repeats", type=int, default=20, help="runs of each engine per round")
    parser.add_argument("--build-only", action="store_true",
                        help="build the engines and check they hold the plugin (needs no GPU)")
    args = parser.parse_args(argv)
    if args.build_only:
        return build_only(args.precisions)
    reason = engines_unavailable()
    if reason is not None:
        print(f"cannot run engines here: {reason}", file=sys.stderr)
        return 2
    from hinet_deploy.engines.tensorrt_module import import_tensorrt

    trt = import_tensorrt()
    start = time.perf_counter()
    lines = []
    with tempfile.TemporaryDirectory(prefix="hin-plugin-bench-") as tmp:
        for name, ckpt in checkpoints(Path(tmp)).items():
            for precision in args.precisions:
                lines += compare(name, ckpt, precision, Path(tmp) / name.split()[0], args)
    print(f"{device_name()}; {driver_version()}; {trt.name} {trt.version}; median of "
          f"{args.rounds} alternated rounds of {args.repeats} runs each, ms per run (min-max); "
          f"{time.perf_counter() - start:.0f} s in all\n")
    print("| model | precision | size | max abs diff plugin vs plain | PSNR plugin vs plain | "
          "PSNR vs PyTorch FP32 (plugin / plain) | plain ms | plugin ms | plain / plugin |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
