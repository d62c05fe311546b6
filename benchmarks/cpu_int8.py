"""Whether INT8 pays on this CPU: INT8 graphs against the best BF16 path, speed and denoising gain.

    python benchmarks/cpu_int8.py [--threads 2] [--rounds 5] [--size 256]

On the demo model, side by side in alternated rounds at --size (whole 1x3xSxS inputs):
- ONNX Runtime FP32 and OpenVINO BF16 (the CPU's best float path, README);
- the project's Q/DQ graph (made for TensorRT: symmetric INT8 activations, Conv inputs only) in
  ONNX Runtime and in OpenVINO;
- a CPU-style Q/DQ graph (onnxruntime's recipe for x86 with VNNI: unsigned 8-bit activations,
  signed per-channel weights, every op onnxruntime can quantize) in ONNX Runtime and OpenVINO.
Both INT8 graphs use the same calibration (32 crops of 256 of the shipped training photographs).
For each, the denoising gain on the three held-out photographs (PSNR vs clean, minus the noisy
input's) and the PSNR against the FP32 output, through the Restorer in its default mode.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
from pathlib import Path

import numpy as np

from hinet_deploy.build.calibration import CalibOptions, calibration_reader
from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA, HELD_OUT, add_gaussian_noise, load_photo
from hinet_deploy.checks.timing import alternated_rounds, device_name
from hinet_deploy.export.precision import to_int8
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.backends import OnnxRuntimeBackend, OpenVinoBackend
from hinet_deploy.runtime.metrics import psnr


def cpu_qdq_graph(src: Path, dst: Path) -> None:
    """onnxruntime's static quantization as its docs advise for x86 CPUs with VNNI."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader, _ = calibration_reader(CalibOptions())
    with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints its histogram settings
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibStridedMinMax": 1, "CalibPercentile": 99.999})


def graphs(folder: Path) -> dict[str, Path]:
    from hinet_deploy.export.checkpoint import load_checkpoint
    from hinet_deploy.export.onnx_export import export_onnx
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    fp32 = folder / "demo.onnx"
    export_onnx(load_checkpoint(DEMO_CHECKPOINT), fp32, log=lambda m: None)
    trt = folder / "demo.int8-trt.onnx"
    reader, _ = calibration_reader(CalibOptions())
    to_int8(fp32, trt, reader)
    cpu = folder / "demo.int8-cpu.onnx"
    cpu_qdq_graph(fp32, cpu)
    return {"fp32": fp32, "trt": trt, "cpu": cpu}


def contenders(paths: dict[str, Path], threads: int) -> dict[str, tuple[Path, dict]]:
    ort = {"backend": "onnxruntime", "threads": threads}
    ov = {"backend": "openvino", "threads": threads}
    return {"ONNX Runtime FP32": (paths["fp32"], ort),
            "OpenVINO BF16": (paths["fp32"], {**ov, "precision": "bf16"}),
            "ONNX Runtime, TensorRT Q/DQ": (paths["trt"], ort),
            "OpenVINO, TensorRT Q/DQ": (paths["trt"], {**ov, "precision": "fp32"}),
            "ONNX Runtime, CPU Q/DQ": (paths["cpu"], ort),
            "OpenVINO, CPU Q/DQ": (paths["cpu"], {**ov, "precision": "fp32"})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    clean = {n: load_photo(n) for n in HELD_OUT}
    noisy = {n: add_gaussian_noise(im, DEMO_NOISE_SIGMA, i) for i, (n, im) in enumerate(clean.items())}
    noisy_psnr = statistics.mean(psnr(noisy[n], clean[n]) for n in HELD_OUT)
    x = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        runs = contenders(graphs(Path(tmp)), args.threads)
        quality, runners = {}, {}
        for name, (graph, options) in runs.items():
            with Restorer(graph, **options) as restore:
                quality[name] = {n: restore(noisy[n]) for n in HELD_OUT}
            cls = OnnxRuntimeBackend if options["backend"] == "onnxruntime" else OpenVinoBackend
            extra = {k: v for k, v in options.items() if k not in ("backend",)}
            backend = cls(graph, **extra)
            backend.run(x)  # warm-up (and OpenVINO's compilation for this shape)
            runners[name] = lambda b=backend: b.run(x)
        times = alternated_rounds(runners, args.rounds)
    reference = quality["ONNX Runtime FP32"]
    bf16 = statistics.median(times["OpenVINO BF16"])
    print(f"device: {device_name()}; demo model; 1x3x{args.size}x{args.size}; {args.threads} "
          f"threads; median of {args.rounds} alternated rounds (min-max); quality on the held-out "
          f"photographs ({', '.join(HELD_OUT)}) + noise sigma {DEMO_NOISE_SIGMA:g}\n")
    print("| contender | ms | vs OpenVINO BF16 | denoising gain | PSNR vs FP32 output |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        gain = statistics.mean(psnr(quality[name][n], clean[n]) for n in HELD_OUT) - noisy_psnr
        vs_fp32 = statistics.mean(psnr(quality[name][n], reference[n]) for n in HELD_OUT)
        median = statistics.median(t)
        print(f"| {name} | {1e3 * median:.1f} ({1e3 * min(t):.1f}-{1e3 * max(t):.1f}) | "
              f"{bf16 / median:.2f}x | {gain:+.2f} dB | "
              f"{'-' if name == 'ONNX Runtime FP32' else f'{vs_fp32:.1f} dB'} |")


if __name__ == "__main__":
    main()
