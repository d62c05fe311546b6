"""The thin runtime: Restorer and its backends, tiling, image I/O and metrics."""
from runtime.restorer import Restorer

__all__ = ["Restorer"]
