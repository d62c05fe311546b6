"""hinet-deploy: HINet checkpoints to verified ONNX graphs, TensorRT engines and a thin runtime."""
from hinet_deploy.errors import HinetDeployError

__all__ = ["HinetDeployError"]
__version__ = "0.1.0"
