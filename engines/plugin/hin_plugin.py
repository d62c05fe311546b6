"""The fused Half-Instance-Norm + LeakyReLU TensorRT plugin: IPluginV3 with an IPluginCreatorV3One.

Name `HalfInstanceNormLeakyReLU`, namespace `hinet_deploy`, version 1: the op, domain and version the
graph rewrite (export/hin_fusion.py) writes, so the ONNX parser creates it from the fused node. The
kernel (hin_leaky.cu) is compiled with NVRTC for the GPU it runs on and launched through cuda-python.
The classes are made for whichever TensorRT module is given (`tensorrt` or `tensorrt_rtx`).

Status: build-time methods and field (de)serialisation are tested on a CPU, and TensorRT-RTX builds
engines holding the plugin on a CPU (its parser needs engines.plugin.rtx_parser); the kernels,
compiled by NVRTC and launched through `HinKernel` as enqueue does, were checked against the numpy
oracle on an H100 (benchmarks/hin_kernel.py, tests/test_hin_fusion.py). Never run inside an engine
on a GPU: TensorRT-RTX does not run on Hopper, and full TensorRT is not installable here (README).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import install_hint
from hinet_deploy.export.hin_spec import PLUGIN_DOMAIN as NAMESPACE
from hinet_deploy.export.hin_spec import PLUGIN_FIELDS as FIELDS
from hinet_deploy.export.hin_spec import PLUGIN_OP as NAME
from hinet_deploy.export.hin_spec import PLUGIN_VERSION as VERSION

KERNEL_SOURCE = Path(__file__).with_name("hin_leaky.cu")
THREADS = 256  # per block
# A block may use 48 KiB of shared memory in all without opting in; hin_leaky_* already use 400 B of
# static shared memory (nvcc --resource-usage, sm_75..sm_90), so the plane cache gets 48 KiB less a
# reserve of 1 KiB. tests/test_hin_fusion.py re-measures the static use with nvcc, and _Module checks
# the loaded kernel's own limit (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) against it.
STATIC_SHARED_RESERVE = 1024
SHARED_PLANE_BYTES = 48 * 1024 - STATIC_SHARED_RESERVE
TARGET_BLOCKS = 1024  # enough blocks in flight to fill a large GPU (132 SMs on an H100)
MAX_SPLITS = 32  # one warp merges a plane's partial statistics

_registered: dict[str, object] = {}  # module name -> creator; the registry keeps raw pointers


def launch_plan(shape) -> tuple[int, int]:
    """(splits, dynamic shared bytes) for an N x C x H x W input. splits 0: one block per plane with
    the plane in shared memory (hin_leaky); else hin_stats + hin_apply, each plane over `splits`
    blocks, so that few large planes still fill the GPU."""
    n, c, h, w = shape
    plane = h * w * 4
    if plane <= SHARED_PLANE_BYTES:
        return 0, plane
    wanted = -(-TARGET_BLOCKS // (n * c))
    return max(1, min(MAX_SPLITS, wanted, -(-h * w // THREADS))), 0


def workspace_bytes(shape) -> int:
    """Partial statistics of the split path: N * C/2 * splits * (count, mean, M2) floats."""
    splits, _ = launch_plan(shape)
    return shape[0] * (shape[1] // 2) * splits * 3 * 4


def workspace_bound(max_shape) -> int:
    """The most workspace_bytes of any shape inside a profile whose largest input is `max_shape`:
    splits grow with H*W but shrink with N, so every batch size up to the largest is tried."""
    n, c, h, w = max_shape
    return max(workspace_bytes((k, c, h, w)) for k in range(1, n + 1))


def check_nvrtc():
    """The NVRTC bindings with their library, or one clear error (checked when the plugin is
    registered, not first inside enqueue, where TensorRT would only say the enqueue threw)."""
    try:
        from cuda.bindings import nvrtc

        err, *_ = nvrtc.nvrtcVersion()
    except (ImportError, OSError, RuntimeError) as exc:
        raise HinetDeployError(f"the HIN plugin compiles its kernel with NVRTC, which cannot be "
                               f"loaded here ({exc}); install it with: {install_hint('trt')} "
                               f"(nvidia-cuda-nvrtc)") from exc
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise HinetDeployError(f"NVRTC does not work here ({err}); install it with: "
                               f"{install_hint('trt')}")
    return nvrtc


def nvrtc_target(capability: tuple[int, int], supported: list[int]) -> tuple[str, bool]:
    """(architecture option, cubin?) for this GPU. A cubin (sm_XY) where NVRTC knows the GPU: it
    loads on any driver. Otherwise PTX for the newest architecture NVRTC knows below it, which the
    driver compiles (PTX from an NVRTC newer than the driver would not load; NVIDIA's
    samples/python/plugin_utils.py compiles cubins for this reason)."""
    arch = capability[0] * 10 + capability[1]
    if arch in supported:
        return f"--gpu-architecture=sm_{arch}", True
    older = [a for a in supported if a < arch]
    if not older:
        raise HinetDeployError(f"NVRTC here supports sm_{min(supported)} and newer, not the "
                               f"GPU's sm_{arch}")
    return f"--gpu-architecture=compute_{max(older)}", False


def compile_kernels(capability: tuple[int, int]) -> bytes:
    """NVRTC: hin_leaky.cu -> a cubin (or PTX) for this compute capability."""
    nvrtc = check_nvrtc()

    def check(result):
        err, *rest = result
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC: {nvrtc.nvrtcGetErrorString(err)[1].decode()}")
        return rest[0] if rest else None

    target, cubin = nvrtc_target(capability, [int(a) for a in check(nvrtc.nvrtcGetSupportedArchs())])
    prog = check(nvrtc.nvrtcCreateProgram(KERNEL_SOURCE.read_bytes(), b"hin_leaky.cu", 0, [], []))
    try:
        opts = [target.encode(), b"-std=c++17"]
        err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            log = b" " * check(nvrtc.nvrtcGetProgramLogSize(prog))
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"NVRTC could not compile {KERNEL_SOURCE.name}: {log.decode()}")
        size, get = (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if cubin else \
            (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        image = b" " * check(size(prog))
        check(get(prog, image))
        return image
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


class _Module:
    """The compiled kernels on one device: compiled and loaded once per process and device."""

    _loaded: dict[int, "_Module"] = {}

    @classmethod
    def for_current_device(cls) -> "_Module":
        from cuda.bindings import runtime

        _check(runtime.cudaFree(0))  # makes the device's primary context current if none is
        device = _check(runtime.cudaGetDevice())
        if device not in cls._loaded:
            cls._loaded[device] = cls(device)
        return cls._loaded[device]

    def __init__(self, device: int):
        from cuda.bindings import driver, runtime

        props = _check(runtime.cudaGetDeviceProperties(device))
        self.module = _check(driver.cuModuleLoadData(compile_kernels((props.major, props.minor))))
        self.functions = {
            (kind, np.dtype(dtype)): _check(driver.cuModuleGetFunction(
                self.module, f"hin_{kind}_{suffix}".encode()))
            for kind in ("leaky", "stats", "apply")
            for dtype, suffix in ((np.float32, "f32"), (np.float16, "f16"))}
        attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        for dtype in (np.float32, np.float16):
            room = _check(driver.cuFuncGetAttribute(attr, self.functions["leaky", np.dtype(dtype)]))
            if room < SHARED_PLANE_BYTES:  # the static use grew past the reserve: a bug here
                raise RuntimeError(f"hin_leaky can take {room} B of dynamic shared memory, less "
                                   f"than the {SHARED_PLANE_BYTES} B plane cache")


def _check(result):
    err, *rest = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if rest else None


class HinKernel:
    """One plugin's device copies of gamma/beta, and its launches of the device's kernels."""

    def __init__(self, gamma: np.ndarray, beta: np.ndarray):
        from cuda.bindings import driver

        self.drv = driver
        self.functions = _Module.for_current_device().functions
        self.buffers: list[int] = []
        self.gamma = self._upload(gamma)
        self.beta = self._upload(beta)

    def _upload(self, values: np.ndarray) -> int:
        values = np.ascontiguousarray(values, dtype=np.float32)
        ptr = _check(self.drv.cuMemAlloc(values.nbytes))
        self.buffers.append(int(ptr))
        _check(self.drv.cuMemcpyHtoD(ptr, values.ctypes.data, values.nbytes))
        return int(ptr)

    def free(self) -> None:
        for ptr in self.buffers:
            self.drv.cuMemFree(ptr)
        self.buffers = []

    def launch(self, dtype, shape, x: int, y: int, epsilon: float, slope: float, stream: int,
               workspace: int = 0):
        """One HIN block on the GPU; `workspace` holds workspace_bytes(shape) (split path only)."""
        splits, shared = launch_plan(shape)
        n, c, h, w = shape
        dtype, i, f, p = np.dtype(dtype), ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        if splits == 0:
            self._launch(("leaky", dtype), n * c, shared, stream,
                         (x, y, self.gamma, self.beta, c, c // 2, h * w, epsilon, slope),
                         (p, p, p, p, i, i, i, f, f))
            return
        if not workspace:
            raise RuntimeError(f"HIN kernel at {shape} needs a workspace of "
                               f"{workspace_bytes(shape)} bytes")
        self._launch(("stats", dtype), n * (c // 2) * splits, 0, stream,
                     (x, workspace, c, c // 2, h * w, splits), (p, p, i, i, i, i))
        self._launch(("apply", dtype), n * c * splits, 0, stream,
                     (x, y, workspace, self.gamma, self.beta, c, c // 2, h * w, splits, epsilon,
                      slope), (p, p, p, p, p, i, i, i, i, f, f))

    def _launch(self, key, blocks: int, shared: int, stream: int, values, types):
        _check(self.drv.cuLaunchKernel(self.functions[key], blocks, 1, 1, THREADS, 1, 1,
                                            shared, stream, (values, types), 0))


def plugin_classes(trt):
    """(Plugin, Creator) classes for the given TensorRT module."""

    class HinPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                    trt.IPluginV3OneRuntime):
        def __init__(self, fields: dict):
            for base in (trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                         trt.IPluginV3OneRuntime):
                base.__init__(self)
            self.num_outputs, self.plugin_name = 1, NAME
            self.plugin_namespace, self.plugin_version = NAMESPACE, VERSION
            self.fields = {k: np.asarray(fields[k], np.float32).ravel() for k in FIELDS}
            self.shape, self.dtype, self.kernel = None, None, None
            # Every HIN layer has the same timing behaviour: one id, so TensorRT times the plugin
            # once, not once per layer (NVIDIA's CuTe DSL plugin sample does the same).
            self.timing_cache_id = ""

        def get_capability_interface(self, kind):
            return self

        def clone(self):
            twin = HinPlugin(self.fields)  # its own device buffers, made at its first enqueue
            twin.shape, twin.dtype = self.shape, self.dtype
            return twin

        def destroy(self):
            if self.kernel is not None:
                self.kernel.free()
                self.kernel = None

        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            return [trt.DimsExprs(inputs[0])]

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if pos == 0:
                return desc.type in (trt.DataType.FLOAT, trt.DataType.HALF)
            return desc.type == in_out[0].desc.type

        def configure_plugin(self, inputs, outputs):
            pass

        def get_workspace_size(self, inputs, outputs):
            return workspace_bound(tuple(inputs[0].max))

        def get_valid_tactics(self):
            return []

        def set_tactic(self, tactic):
            pass

        def on_shape_change(self, inputs, outputs):
            self.shape = tuple(inputs[0].dims)
            self.dtype = np.dtype(trt.nptype(inputs[0].type))

        def attach_to_context(self, context):
            return self.clone()

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([
                trt.PluginField(k, self.fields[k], trt.PluginFieldType.FLOAT32) for k in FIELDS])

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            if self.kernel is None:
                self.kernel = HinKernel(self.fields["gamma"], self.fields["beta"])
            self.kernel.launch(self.dtype, self.shape, inputs[0], outputs[0],
                               float(self.fields["epsilon"][0]),
                               float(self.fields["negative_slope"][0]), stream, workspace)

    class HinPluginCreator(trt.IPluginCreatorV3One):
        def __init__(self):
            trt.IPluginCreatorV3One.__init__(self)
            self.name, self.plugin_namespace, self.plugin_version = NAME, NAMESPACE, VERSION
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField(k, np.array([], np.float32), trt.PluginFieldType.FLOAT32)
                for k in FIELDS])

        def create_plugin(self, name, fields, phase):
            # The node also carries plugin_namespace/plugin_version for older parsers: ignored.
            return HinPlugin({f.name: np.array(f.data) for f in fields if f.name in FIELDS})

    return HinPlugin, HinPluginCreator


def register(trt) -> object:
    """Registers the creator with this TensorRT module's plugin registry, once per process."""
    if trt.__name__ not in _registered:
        check_nvrtc()  # the kernel is compiled at the first enqueue: fail here, clearly, instead
        _, creator_class = plugin_classes(trt)
        creator = creator_class()
        trt.get_plugin_registry().register_creator(creator, NAMESPACE)
        _registered[trt.__name__] = creator
    return _registered[trt.__name__]
