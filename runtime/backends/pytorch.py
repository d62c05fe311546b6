"""PyTorch: a checkpoint run directly, the reference every other backend is measured against."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.common.lazy import require
from hinet_deploy.common.limits import SizeLimits
from hinet_deploy.runtime.backends.base import BackendBase, option


@dataclass(frozen=True)
class TorchOptions:
    variant: str | None = option(None, "the official variant, where the weights do not say it",
                                 cli=False)
    device: str = option("cpu", "PyTorch's device: cpu, cuda, cuda:1, ...")


class TorchBackend(BackendBase):
    """The PyTorch reference: runs a checkpoint directly, FP32, on the CPU or a CUDA device."""

    name = "pytorch"
    suffixes = (".pth", ".pt")
    extra = "export"
    requires = ("torch",)
    Options = TorchOptions

    @classmethod
    def check_runs(cls, models) -> list:
        return [("fp32", models.checkpoint, ())]  # the reference every check measures against

    def __init__(self, path, variant: str | None = None, device: str = "cpu"):
        self.torch = require("torch", "the PyTorch backend (a .pth/.pt model)")
        from hinet_deploy.export.checkpoint import load_checkpoint  # the earlier stage; needs torch

        self.path = Path(path)
        self.loaded = load_checkpoint(path, variant)
        self.device = device
        self.net = self.loaded.net.to(device)
        self.limits = SizeLimits(multiple=self.loaded.size_multiple,
                                 width_factor=self.loaded.config.wf)

    def run_impl(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.net(x)[1].float().cpu().numpy()

    def run_device_impl(self, batch):
        """A torch tensor in, float32 out on the same device; no copy when the model is there."""
        with self.torch.no_grad():
            return self.net(batch.to(self.device))[1].float().to(batch.device)

    def close_impl(self) -> None:
        self.net = None
