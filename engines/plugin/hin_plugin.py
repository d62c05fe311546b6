"""The fused Half-Instance-Norm + LeakyReLU TensorRT plugin: IPluginV3 with an IPluginCreatorV3One.

Name `HalfInstanceNormLeakyReLU`, namespace `hinet_deploy`, version 1: the op, domain and version the
graph rewrite (export/hin_fusion.py) writes, so the ONNX parser creates it from the fused node. The
kernel (hin_leaky.cu) is compiled with NVRTC for the GPU it runs on and launched through cuda-python.
The classes are made for whichever TensorRT module is given (`tensorrt` or `tensorrt_rtx`).

Status: build-time methods and field (de)serialisation are tested on a CPU; the kernels, compiled
by NVRTC and launched through `_Kernel` as enqueue does, were checked against the numpy oracle on an
H100 (benchmarks/hin_kernel.py, tests/test_hin_fusion.py). Never run inside an engine: TensorRT-RTX
1.7 aborts on any Python plugin and does not run on Hopper, and full TensorRT is not installable
here (README).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

NAME = "HalfInstanceNormLeakyReLU"  # = export.hin_fusion.PLUGIN_OP
NAMESPACE = "hinet_deploy"  # = export.hin_fusion.PLUGIN_DOMAIN
VERSION = "1"
FIELDS = ("epsilon", "negative_slope", "gamma", "beta")
KERNEL_SOURCE = Path(__file__).with_name("hin_leaky.cu")
THREADS = 256  # per block
SHARED_PLANE_BYTES = 48 * 1024  # planes up to this size are cached in shared memory (no opt-in)
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


def compile_ptx(capability: tuple[int, int]) -> bytes:
    """NVRTC: hin_leaky.cu -> PTX for this compute capability."""
    from cuda.bindings import nvrtc

    def check(result):
        err, *rest = result
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC: {nvrtc.nvrtcGetErrorString(err)[1].decode()}")
        return rest[0] if rest else None

    prog = check(nvrtc.nvrtcCreateProgram(KERNEL_SOURCE.read_bytes(), b"hin_leaky.cu", 0, [], []))
    opts = [f"--gpu-architecture=compute_{capability[0]}{capability[1]}".encode(), b"-std=c++17"]
    err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        size = check(nvrtc.nvrtcGetProgramLogSize(prog))
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        raise RuntimeError(f"NVRTC could not compile {KERNEL_SOURCE.name}: {log.decode()}")
    ptx = b" " * check(nvrtc.nvrtcGetPTXSize(prog))
    check(nvrtc.nvrtcGetPTX(prog, ptx))
    return ptx


class _Kernel:
    """The compiled kernels and the device copies of gamma/beta, made at the first enqueue."""

    def __init__(self, gamma: np.ndarray, beta: np.ndarray):
        from cuda.bindings import driver, runtime

        self.drv = driver
        self._check(runtime.cudaFree(0))  # makes the device's primary context current if none is
        props = self._check(runtime.cudaGetDeviceProperties(self._check(runtime.cudaGetDevice())))
        module = self._check(driver.cuModuleLoadData(compile_ptx((props.major, props.minor))))
        self.functions = {
            (kind, np.dtype(dtype)): self._check(driver.cuModuleGetFunction(
                module, f"hin_{kind}_{suffix}".encode()))
            for kind in ("leaky", "stats", "apply")
            for dtype, suffix in ((np.float32, "f32"), (np.float16, "f16"))}
        self.gamma = self._upload(gamma)
        self.beta = self._upload(beta)

    @staticmethod
    def _check(result):
        err, *rest = result
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if rest else None

    def _upload(self, values: np.ndarray) -> int:
        values = np.ascontiguousarray(values, dtype=np.float32)
        ptr = self._check(self.drv.cuMemAlloc(values.nbytes))
        self._check(self.drv.cuMemcpyHtoD(ptr, values.ctypes.data, values.nbytes))
        return int(ptr)

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
        self._check(self.drv.cuLaunchKernel(self.functions[key], blocks, 1, 1, THREADS, 1, 1,
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

        def get_capability_interface(self, kind):
            return self

        def clone(self):
            twin = HinPlugin(self.fields)
            twin.shape, twin.dtype, twin.kernel = self.shape, self.dtype, self.kernel
            return twin

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
                self.kernel = _Kernel(self.fields["gamma"], self.fields["beta"])
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
            self.alive = []  # TensorRT holds raw pointers to the plugins made here

        def create_plugin(self, name, fields, phase):
            plugin = HinPlugin({f.name: np.array(f.data) for f in fields})
            self.alive.append(plugin)
            return plugin

    return HinPlugin, HinPluginCreator


def register(trt) -> object:
    """Registers the creator with this TensorRT module's plugin registry, once per process."""
    if trt.__name__ not in _registered:
        _, creator_class = plugin_classes(trt)
        creator = creator_class()
        trt.get_plugin_registry().register_creator(creator, NAMESPACE)
        _registered[trt.__name__] = creator
    return _registered[trt.__name__]
