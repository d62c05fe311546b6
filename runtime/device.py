"""GPU arrays through the Restorer without a trip through host memory.

Pipelines that already hold images on the GPU pass torch or cupy arrays (anything exposing
`__cuda_array_interface__` or a CUDA DLPack capsule) and get the same kind of array back, on the same
device: the conversion to the network's format, tiling and the way back run on the GPU through torch
views of the caller's memory (zero-copy in both directions). Image rules are those of numpy images
(runtime.images): same layouts, dtypes and errors.
"""
from __future__ import annotations

import sys

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.runtime.images import ImageLayout, check_image, scale_of

_DLPACK_CUDA = (2, 13)  # kDLCUDA, kDLCUDAManaged


def is_device_array(obj) -> bool:
    """True for arrays in CUDA device memory (torch CUDA tensors, cupy arrays, ...)."""
    if isinstance(obj, np.ndarray):
        return False
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    device = getattr(obj, "__dlpack_device__", None)
    if device is None:
        return False
    try:
        return device()[0] in _DLPACK_CUDA
    except Exception:  # a foreign object's own failure means: not one we can take
        return False


def as_torch(obj):
    """A torch view of a device array; no copy."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj
    if hasattr(obj, "__dlpack__"):
        return torch.from_dlpack(obj)
    return torch.as_tensor(obj, device="cuda")  # reads __cuda_array_interface__, shares memory


def like(result, original):
    """`result` (a torch tensor) as the kind of array `original` was: cupy in, cupy out."""
    import torch

    if isinstance(original, torch.Tensor):
        return result
    module = sys.modules.get(type(original).__module__.split(".")[0])
    from_dlpack = getattr(module, "from_dlpack", None)
    return from_dlpack(result) if from_dlpack else result


def _numpy_dtype(torch_dtype) -> np.dtype:
    try:
        return np.dtype(str(torch_dtype).removeprefix("torch."))
    except TypeError:
        raise HinetDeployError(f"image dtype {torch_dtype} is not supported: give uint8, uint16 "
                               f"or float in [0, 1]") from None


def to_network_device(image) -> tuple[object, ImageLayout]:
    """A torch CUDA image (HxW, HxWx1, HxWx3, HxWx4) -> (3xHxW float32 in [0,1] on its device,
    layout), like runtime.images.to_network."""
    import torch

    dtype = _numpy_dtype(image.dtype)
    check_image(tuple(image.shape), dtype)
    hwc = image[..., None] if image.ndim == 2 else image
    channels = hwc.shape[2]
    alpha = hwc[..., 3].clone() if channels == 4 else None
    rgb = hwc.expand(-1, -1, 3) if channels == 1 else hwc[..., :3]
    chw = rgb.permute(2, 0, 1).to(torch.float32).contiguous()
    scale = scale_of(dtype)
    if scale:
        chw /= scale
    elif not bool(torch.isfinite(chw).all()):
        raise HinetDeployError("float image holds NaN or infinite values")
    return chw, ImageLayout(tuple(image.shape), image.dtype, channels == 1, alpha)


def from_network_device(chw, layout: ImageLayout):
    """3xHxW float32 result on the GPU -> the caller's layout and dtype, clipped; in place on `chw`,
    like runtime.images.from_network."""
    import torch

    chw.clamp_(0.0, 1.0)
    scale = scale_of(_numpy_dtype(layout.dtype))
    if scale:
        chw.mul_(scale).round_()
    hwc = chw.permute(1, 2, 0)
    if layout.gray:
        hwc = hwc.mean(dim=2, keepdim=True)
        if scale:
            hwc = hwc.round()
    out = hwc.to(layout.dtype)
    if layout.alpha is not None:
        out = torch.cat([out, layout.alpha[..., None]], dim=2)
    return out.reshape(layout.shape).contiguous()
