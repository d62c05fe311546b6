"""Export a HINet checkpoint to a verified ONNX graph with dynamic batch/height/width.

    python export/to_onnx.py --ckpt gopro.pth [-o gopro.onnx] [--variant gopro] [--opset 17]
                             [--fixed-shape N H W] [--both-stages] [--debug]

Exits 0 only when the graph was written and matched PyTorch under ONNX Runtime. The same command
is `hinet-deploy export`.
"""
import sys

from hinet_deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
