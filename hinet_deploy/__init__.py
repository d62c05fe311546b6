"""hinet-deploy: HINet checkpoints to verified ONNX graphs, TensorRT engines and a thin runtime.

One import root. Its stages, in the order data flows through them:
`hinet_deploy.export` (checkpoint -> ONNX), `hinet_deploy.calib` (calibration data),
`hinet_deploy.engines` (TensorRT engines) and `hinet_deploy.runtime` (the Restorer).
`hinet_deploy.common` is the ground they all stand on. On top, in rooms of their own, sit what
chains the stages: `restore` (photos, folders, videos; locally or on Ray), `build` (the build flow),
`checks` (validate, fidelity, bench, claims), `demo`, and the CLI (`cli`) that calls them. Nothing
below the top imports it.
"""
from hinet_deploy.common.errors import HinetDeployError

__all__ = ["HinetDeployError", "__version__"]
__version__ = "0.2.0"
