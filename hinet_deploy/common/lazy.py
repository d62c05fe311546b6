"""Optional heavy dependencies, imported when first needed, with a message that says what to install."""
from __future__ import annotations

import importlib

from hinet_deploy.common.errors import HinetDeployError


def require(module: str, install: str, purpose: str):
    """Imports `module` or raises HinetDeployError("install X to do Y")."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise HinetDeployError(f"{purpose} needs {module!r} ({exc}); install it with: {install}") from exc
