"""TensorRT engines on a CUDA GPU: `tensorrt` or `tensorrt_rtx`, whichever built the engine.

Before anything runs, the engine's sidecar and the installed backend must agree and the GPU must be
one the backend runs on; when the engine still does not load, the error says which mismatch of GPU
and engine is the likely cause.

EngineRunner moves batches through an execution context, apart from how the context was made:
- numpy in, numpy out: pinned host buffers and device buffers (cuda-python, cuda-bindings), reused
  across calls and grown only when a larger shape arrives, async copies and execute_async_v3 on the
  runner's own CUDA stream;
- torch CUDA tensors in and out (`run_device`): the tensors' own memory is bound to the engine, no
  copy at all, ordered after and before the caller's current stream;
- optional CUDA graphs: TensorRT-RTX captures natively (its runtime config); for full TensorRT the
  runner captures execute_async_v3 once per input shape and replays it.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.backend import load_backend
from engines.build import read_sidecar
from hinet_deploy.errors import HinetDeployError
from hinet_deploy.lazy import require

# TensorRT-RTX 1.7.1 runs engines only on these GPUs, as its runtime says when refusing an H100
# ("Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0"; measured, README). Its build-time
# ComputeCapability enum also names SM75, which the runtime does not list.
RTX_COMPUTE_CAPABILITIES = {(8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


def rtx_runs_on(capability: tuple[int, int]) -> bool:
    return capability in RTX_COMPUTE_CAPABILITIES or capability > (12, 1)
INSTALL_CUDA = "pip install cuda-bindings"


@dataclass
class BufferPlan:
    """Byte capacities of named buffers: a request larger than the capacity grows it, others reuse."""

    capacity: dict[str, int] = field(default_factory=dict)

    def grow(self, name: str, nbytes: int) -> bool:
        """True when the buffer must be (re)allocated for `nbytes`."""
        if nbytes <= self.capacity.get(name, 0):
            return False
        self.capacity[name] = nbytes
        return True


def check_sidecar(sidecar: dict, backend_name: str, backend_version: str, engine: Path) -> None:
    if sidecar.get("backend") != backend_name:
        raise HinetDeployError(f"{engine} was built with {sidecar.get('backend')}, not {backend_name}")
    if sidecar.get("backend_version") != backend_version:
        raise HinetDeployError(
            f"{engine} was built with {backend_name} {sidecar.get('backend_version')} but "
            f"{backend_version} is installed: engines only load in the version that built them; "
            f"rebuild it with hinet-deploy build")


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


def check_shape(shape: tuple[int, int, int, int], profile: dict) -> None:
    """The input N x 3 x H x W must lie inside the engine's optimisation profile."""
    low, high = profile["min"], profile["max"]
    if not all(a <= s <= b for a, s, b in zip(low, shape, high)):
        raise HinetDeployError(
            f"input {'x'.join(map(str, shape))} is outside the engine's profile "
            f"{'x'.join(map(str, low))} .. {'x'.join(map(str, high))}: use the Restorer's blend mode "
            f"with tile <= {min(high[2], high[3])} and batch <= {high[0]}, or rebuild with a larger "
            f"--max")


class _Cuda:
    """The few CUDA runtime calls used here, turning error codes into HinetDeployError."""

    def __init__(self, device: int):
        self.rt = require("cuda.bindings.runtime", INSTALL_CUDA, "running TensorRT engines")
        err, count = self.rt.cudaGetDeviceCount()
        if err != self.rt.cudaError_t.cudaSuccess or not count:
            raise HinetDeployError(f"running a TensorRT engine needs an NVIDIA GPU and driver; "
                                   f"none is usable here ({self.error_text(err)})")
        if not 0 <= device < count:
            raise HinetDeployError(f"there is no CUDA device {device}; this machine has {count}")
        self.device = device
        self.call(self.rt.cudaSetDevice(device))
        props = self.call(self.rt.cudaGetDeviceProperties(device))
        self.capability = (props.major, props.minor)
        self.name = props.name.decode(errors="replace").strip("\x00")
        self.stream = self.call(self.rt.cudaStreamCreateWithFlags(
            self.rt.cudaStreamNonBlocking))

    def error_text(self, err) -> str:
        return self.rt.cudaGetErrorString(err)[1].decode(errors="replace")

    def call(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise HinetDeployError(f"CUDA error: {self.error_text(err)}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def free_bytes(self) -> int:
        return self.call(self.rt.cudaMemGetInfo())[0]

    def close(self) -> None:
        self.rt.cudaStreamDestroy(self.stream)


class EngineRunner:
    """Runs N x 3 x H x W batches through an execution context ("input" -> "output").

    `context` needs set_input_shape, set_tensor_address and execute_async_v3 (TensorRT's
    IExecutionContext). `capture` records one CUDA graph per input shape and replays it; only for
    contexts whose backend does not capture by itself.
    """

    def __init__(self, cuda: _Cuda, context, io_dtype: dict, profile: dict, capture: bool = False):
        self.cuda, self.context, self.io_dtype, self.profile = cuda, context, io_dtype, profile
        self.capture = capture
        self.plan = BufferPlan()
        self.device_ptr: dict[str, int] = {}
        self.host_ptr: dict[str, int] = {}
        self.graphs: dict[tuple, object] = {}  # input shape -> instantiated CUDA graph

    def _buffers(self, name: str, nbytes: int):
        rt, call = self.cuda.rt, self.cuda.call
        if self.plan.grow(name, nbytes):
            self._drop_graphs()  # they hold the old addresses
            if name in self.device_ptr:
                call(rt.cudaFree(self.device_ptr.pop(name)))
                call(rt.cudaFreeHost(self.host_ptr.pop(name)))
            self.device_ptr[name] = call(rt.cudaMalloc(nbytes))
            self.host_ptr[name] = call(rt.cudaMallocHost(nbytes))
        return self.device_ptr[name], self.host_ptr[name]

    def _host_view(self, name: str, shape) -> np.ndarray:
        dtype = self.io_dtype[name]
        count = int(np.prod(shape))
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.host_ptr[name])
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def _io_buffers(self, shape) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """(bytes, device pointers, pinned host pointers) of input and output at this shape."""
        count = int(np.prod(shape))
        nbytes = {n: count * self.io_dtype[n].itemsize for n in ("input", "output")}
        device, host = {}, {}
        for name, size in nbytes.items():
            device[name], host[name] = self._buffers(name, size)
        return nbytes, device, host

    def _run_once(self, shape) -> None:
        if not self.context.execute_async_v3(int(self.cuda.stream)):
            raise HinetDeployError(f"the engine failed to run at {'x'.join(map(str, shape))}")

    def _execute(self, shape, d_in: int, d_out: int) -> None:
        """The engine on the runner's stream, reading d_in and writing d_out."""
        self.context.set_input_shape("input", tuple(shape))
        self.context.set_tensor_address("input", d_in)
        self.context.set_tensor_address("output", d_out)
        if self.capture:
            self._replay(tuple(shape))
        else:
            self._run_once(shape)

    def _replay(self, shape: tuple) -> None:
        rt, call, stream = self.cuda.rt, self.cuda.call, self.cuda.stream
        if shape not in self.graphs:
            # The first run does the work TensorRT defers to it (allocations, shape set-up), which
            # stream capture forbids; the second is recorded.
            self._run_once(shape)
            call(rt.cudaStreamSynchronize(stream))
            call(rt.cudaStreamBeginCapture(
                stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            ran = self.context.execute_async_v3(int(stream))
            graph = call(rt.cudaStreamEndCapture(stream))
            if not ran:
                rt.cudaGraphDestroy(graph)
                raise HinetDeployError("the engine could not be captured in a CUDA graph; run "
                                       "without cuda_graph")
            self.graphs[shape] = call(rt.cudaGraphInstantiate(graph, 0))
            call(rt.cudaGraphDestroy(graph))
        call(rt.cudaGraphLaunch(self.graphs[shape], stream))

    def _drop_graphs(self) -> None:
        for graph in self.graphs.values():
            self.cuda.rt.cudaGraphExecDestroy(graph)
        self.graphs = {}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """numpy in, numpy out, through pinned host buffers."""
        rt, call, stream = self.cuda.rt, self.cuda.call, self.cuda.stream
        check_shape(batch.shape, self.profile)
        nbytes, device, host = self._io_buffers(batch.shape)
        np.copyto(self._host_view("input", batch.shape), batch, casting="same_kind")
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(rt.cudaMemcpyAsync(device["input"], host["input"], nbytes["input"], h2d, stream))
        self._execute(batch.shape, device["input"], device["output"])
        call(rt.cudaMemcpyAsync(host["output"], device["output"], nbytes["output"], d2h, stream))
        call(rt.cudaStreamSynchronize(stream))
        return self._host_view("output", batch.shape).astype(np.float32)

    def run_device(self, batch):
        """A torch CUDA tensor in, a float32 torch CUDA tensor out: the engine reads and writes the
        tensors' own memory (with CUDA graphs, one device-to-device copy each way into the graph's
        fixed buffers). Ordered after the caller's current stream, and before it again."""
        import torch

        check_shape(tuple(batch.shape), self.profile)
        if batch.device.type != "cuda" or batch.device.index != self.cuda.device:
            raise HinetDeployError(f"the engine runs on cuda:{self.cuda.device}; the tensor is on "
                                   f"{batch.device}")
        dtypes = {n: getattr(torch, self.io_dtype[n].name) for n in ("input", "output")}
        x = batch.to(dtypes["input"]).contiguous()
        y = torch.empty(tuple(batch.shape), dtype=dtypes["output"], device=batch.device)
        caller = torch.cuda.current_stream(batch.device)
        ours = torch.cuda.ExternalStream(int(self.cuda.stream), device=batch.device)
        ours.wait_stream(caller)
        x.record_stream(ours)  # the caching allocator must not hand these out while we run
        y.record_stream(ours)
        if self.capture:  # the graph holds its own buffers' addresses
            rt, call, stream = self.cuda.rt, self.cuda.call, self.cuda.stream
            nbytes, device, _ = self._io_buffers(batch.shape)
            d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            call(rt.cudaMemcpyAsync(device["input"], x.data_ptr(), nbytes["input"], d2d, stream))
            self._execute(batch.shape, device["input"], device["output"])
            call(rt.cudaMemcpyAsync(y.data_ptr(), device["output"], nbytes["output"], d2d, stream))
        else:
            self._execute(batch.shape, x.data_ptr(), y.data_ptr())
        caller.wait_stream(ours)
        return y.float()

    def close(self) -> None:
        rt = self.cuda.rt
        rt.cudaStreamSynchronize(self.cuda.stream)
        self._drop_graphs()
        for ptr in self.device_ptr.values():
            rt.cudaFree(ptr)
        for ptr in self.host_ptr.values():
            rt.cudaFreeHost(ptr)
        self.device_ptr, self.host_ptr = {}, {}
        self.context = None


class TensorRtBackend:
    name = "tensorrt"
    fixed_batch = None
    fixed_hw = None

    def __init__(self, path, device: int = 0, cuda_graph: bool = False):
        self.path = Path(path)
        self.sidecar = read_sidecar(self.path)
        trt_backend = load_backend(self.sidecar.get("backend"))
        check_sidecar(self.sidecar, trt_backend.name, trt_backend.version, self.path)
        self.name = trt_backend.name
        self.cuda = _Cuda(device)
        self.runner = None
        try:
            self._load(trt_backend, cuda_graph)
        except BaseException:
            self.cuda.close()  # the stream; nothing else is held yet
            raise

    def _load(self, trt_backend, cuda_graph: bool) -> None:
        if trt_backend.name == "tensorrt_rtx" and not rtx_runs_on(self.cuda.capability):
            raise HinetDeployError(f"{self.path} cannot run here: " + gpu_mismatch(
                trt_backend.name, self.cuda.capability, self.cuda.name, []))
        trt = self.trt = trt_backend.module
        if self.sidecar.get("hin_plugin"):
            from engines.plugin.hin_plugin import register

            register(trt)  # the engine holds plugin layers: their creator must be known first
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            why = gpu_mismatch(trt_backend.name, self.cuda.capability, self.cuda.name,
                               self.sidecar.get("compute_capabilities", []))
            raise HinetDeployError(f"{trt_backend.name} could not deserialise {self.path} on "
                                   f"{self.cuda.name}: {why or 'its log above says why'}")
        native_graphs = hasattr(trt, "CudaGraphStrategy")  # TensorRT-RTX captures by itself
        if cuda_graph and native_graphs:
            config = self.engine.create_runtime_config()
            config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            context = self.engine.create_execution_context(config)
        else:
            context = self.engine.create_execution_context()
        self.size_multiple = int(self.sidecar.get("size_multiple", 16))
        self.profile = self.sidecar["profiles"][0]
        self.max_hw = (self.profile["max"][2], self.profile["max"][3])
        self.max_batch = self.profile["max"][0]
        io_dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
                    for n in ("input", "output")}
        self.runner = EngineRunner(self.cuda, context, io_dtype, self.profile,
                                   capture=cuda_graph and not native_graphs)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.run(batch)

    def run_device(self, batch):
        return self.runner.run_device(batch)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.cuda.close()
        self.runner = self.engine = None
