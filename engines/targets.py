"""Which GPUs an engine runs on, and whether engines can run in this process at all: facts of the
TensorRT builds, read by the build flow, the checks and the runtime alike."""
from __future__ import annotations

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import install_hint
from hinet_deploy.engines.tensorrt_module import import_tensorrt

# TensorRT-RTX 1.7.1 runs engines only on these GPUs, as its runtime says when refusing an H100
# ("Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0"; measured, README). Its build-time
# ComputeCapability enum also names SM75, which the runtime does not list.
RTX_COMPUTE_CAPABILITIES = {(8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


# What a TensorRT-RTX engine built with no target named runs on: "By default, an engine built by
# TensorRT-RTX can be run on GPU devices with compute capability 8.0, 8.6, 8.9, 12.0, and later"
# (TensorRT-RTX documentation, "CPU-Only AOT and TensorRT-RTX Engines"). Turing (SM75) only when
# named.
RTX_DEFAULT_TARGETS = ("SM80", "SM86", "SM89", "SM120")
RTX_DEFAULT_TARGETS_NOTE = "TensorRT-RTX's default targets, and later GPUs"


def rtx_runs_on(capability: tuple[int, int]) -> bool:
    return capability in RTX_COMPUTE_CAPABILITIES or capability > (12, 1)


def gpu_mismatch(backend_name: str, capability: tuple[int, int], gpu_name: str,
                 targets: list[str]) -> str | None:
    """Why this GPU cannot run the engine, or None. A GPU outside TensorRT-RTX's list is refused
    before the engine is read; a missing build target explains a failed deserialisation."""
    if backend_name != "tensorrt_rtx":
        return None
    if not rtx_runs_on(capability):
        supported = ", ".join(f"{a}.{b}" for a, b in sorted(RTX_COMPUTE_CAPABILITIES))
        return (f"{gpu_name} has compute capability {capability[0]}.{capability[1]}, outside "
                f"TensorRT-RTX's list ({supported}, and newer): data-centre GPUs such as the "
                f"H100 need full TensorRT; build the engine with it on that machine")
    wanted = f"SM{capability[0]}{capability[1]}"
    if targets and wanted not in targets:
        return (f"the engine was built for {', '.join(targets)}, not for {gpu_name} ({wanted}); "
                f"rebuild with --compute-capability {wanted}")
    return None


def engines_unavailable(tensorrt: str | None = None) -> str | None:
    """Why no engine can run in this process (no TensorRT, no cuda-bindings, no usable GPU, a GPU
    TensorRT-RTX does not run on), or None when engines can run: what validate and bench say in
    their not-run rows instead of a fixed list."""
    try:
        trt_module = import_tensorrt(tensorrt)
    except HinetDeployError as exc:
        return f"no TensorRT here: {exc}"
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        return f"cuda-bindings is not installed: {install_hint('trt')}"
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or count == 0:
        return f"engines need an NVIDIA GPU and driver: {no_gpu_text(rt, err)}"
    err, props = rt.cudaGetDeviceProperties(0)
    if err != rt.cudaError_t.cudaSuccess:
        return f"the GPU's properties cannot be read ({err})"
    name = props.name.decode(errors="replace").strip("\x00")
    return gpu_mismatch(trt_module.name, (props.major, props.minor), name, [])


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver's user-space library loads here (libcuda, which every CUDA
    runtime needs; a machine without an NVIDIA GPU has none)."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def no_gpu_text(rt, err) -> str:
    """Why no GPU can run an engine, in words that send the user the right way: without a driver
    the CUDA runtime says "driver version is insufficient", which sends people to update a
    driver that is not there."""
    if not nvidia_driver_present():
        return "no NVIDIA GPU here (no NVIDIA driver is installed)"
    text = rt.cudaGetErrorString(err)[1].decode(errors="replace")
    return f"none is usable here ({text})"

