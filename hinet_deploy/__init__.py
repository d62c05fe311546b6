"""hinet-deploy: HINet checkpoints to verified ONNX graphs, TensorRT engines and a thin runtime.

One import root. Its stages, in the order data flows through them:
`hinet_deploy.export` (checkpoint -> ONNX), `hinet_deploy.calib` (calibration data),
`hinet_deploy.engines` (TensorRT engines) and `hinet_deploy.runtime` (the Restorer).
`hinet_deploy.common` is the ground they all stand on; the CLI and the pipelines that chain the
stages (`hinet_deploy.cli`, `.pipeline`, ...) sit on top and nothing below imports them.
"""
from pathlib import Path as _Path

from hinet_deploy.common.errors import HinetDeployError

__all__ = ["HinetDeployError", "__version__"]
__version__ = "0.2.0"

# In a source checkout the stage folders sit beside this package, at the repository's top (an
# installed wheel has them inside it, as setuptools' package-dir maps them). Let the import system
# find them there too, so the checkout works with or without an editable install.
_CHECKOUT = _Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "runtime" / "restorer.py").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 (a package's own __path__)
