"""The thin runtime: Restorer and its backends, tiling, image I/O and metrics.

Installed, this is `hinet_deploy.runtime`. In a checkout's root `from runtime import Restorer`
works too: that name is made the same module, so nothing is imported twice under two names.
"""
if __name__ == "runtime":
    import importlib
    import sys

    sys.modules[__name__] = importlib.import_module("hinet_deploy.runtime")
else:
    from hinet_deploy.runtime.restorer import Restorer

    __all__ = ["Restorer"]
