"""This CPU's measured peaks, FP32 (ONNX Runtime) and BF16 (OpenVINO), for the shares in the README.

    python benchmarks/cpu_peaks.py [--threads 2] [--rounds 5]

Two one-node ONNX graphs, each the best case of its kind: a MatMul of 2048^3 multiply-accumulates,
and a 3x3 convolution of 64 to 64 channels at 256x256 (HINet's own layer shape), run by ONNX Runtime
(FP32) and by OpenVINO at FP32 and BF16 in alternated rounds; prints the median GMAC/s of each.
The higher of the two per runner is its peak; a network's GMAC/s reads as a share of it.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from hinet_deploy.checks.timing import alternated_rounds, device_name


PROBES = {  # name: (op, input shape, weight shape, output shape, MACs)
    "MatMul 2048^3": ("MatMul", [2048, 2048], [2048, 2048], [2048, 2048], 2048 ** 3),
    "Conv 3x3 64->64 at 256x256": ("Conv", [1, 64, 256, 256], [64, 64, 3, 3], [1, 64, 256, 256],
                                   256 * 256 * 64 * 64 * 9),
}


def probe_graph(path: Path, op: str, x_shape, w_shape, y_shape) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).random(w_shape, dtype=np.float32) * 0.01, "w")
    attrs = {"pads": [1, 1, 1, 1]} if op == "Conv" else {}
    graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], **attrs)], "peak",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def measure(op, x_shape, w_shape, y_shape, threads: int, rounds: int) -> dict[str, float]:
    """Median seconds of each runner on one probe."""
    import onnxruntime as ort
    import openvino as ov

    x = np.random.default_rng(1).random(x_shape, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "probe.onnx"
        probe_graph(graph, op, x_shape, w_shape, y_shape)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        core = ov.Core()
        requests = {p: core.compile_model(str(graph), "CPU", {
            "INFERENCE_PRECISION_HINT": p, "INFERENCE_NUM_THREADS": threads}).create_infer_request()
            for p in ("f32", "bf16")}
        runners = {"onnxruntime fp32": lambda: session.run(None, {"x": x}),
                   "openvino fp32": lambda: requests["f32"].infer({0: x}),
                   "openvino bf16": lambda: requests["bf16"].infer({0: x})}
        for run in runners.values():
            run()
        times = alternated_rounds(runners, rounds)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{device_name()}; {args.threads} threads; median of {args.rounds} alternated rounds\n")
    print("| probe | runner | median ms | GMAC/s |")
    print("|---|---|---|---|")
    peaks: dict[str, float] = {}
    for probe, (op, xs, ws, ys, macs) in PROBES.items():
        for name, median in measure(op, xs, ws, ys, args.threads, args.rounds).items():
            rate = macs / median / 1e9
            peaks[name] = max(peaks.get(name, 0.0), rate)
            print(f"| {probe} | {name} | {1000 * median:.1f} | {rate:.0f} |")
    print("\npeaks (GMAC/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
