"""Build a TensorRT engine (FP32, FP16 or INT8) from a HINet checkpoint or exported graph.

    python export/build_trt.py --fp16 [--ckpt PATH | --onnx PATH] [-o ENGINE] [--tensorrt tensorrt_rtx]
    python export/build_trt.py --int8 [--calib-dir DIR] [--calib-method entropy|percentile|minmax]

Precision is written into the ONNX graph (FP16 with FP32 instance norm, or explicit Q/DQ) and the
network is built strongly typed, on TensorRT 10/11 or TensorRT-RTX alike. Exits 0 only when the
engine and its sidecar ENGINE.json were written. The same command is `hinet-deploy build`.
"""
import sys

from hinet_deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
