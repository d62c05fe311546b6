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
import hashlib
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import atomic_path, cache_dir
from hinet_deploy.common.lazy import require
from hinet_deploy.common.limits import SizeLimits
from hinet_deploy.common.untrusted import check_recorded
from hinet_deploy.engines.plugin.support import register_plugin
from hinet_deploy.engines.sidecar import EngineSidecar, read_sidecar, sidecar_path
from hinet_deploy.engines.targets import gpu_mismatch, no_gpu_text, rtx_runs_on
from hinet_deploy.engines.tensorrt_module import collecting_logger, import_tensorrt
from hinet_deploy.export.hin_spec import PLUGIN_VERSION
from hinet_deploy.export.metadata import OUTPUT_NAME
from hinet_deploy.runtime.backends.base import BackendBase, option

@dataclass
class BufferPlan:
    """Byte capacities of named buffers: a request larger than the capacity grows it, others reuse."""

    capacity: dict[str, int] = field(default_factory=dict)

    def needs(self, name: str, nbytes: int) -> bool:
        """True when the buffer must be (re)allocated for `nbytes`."""
        return nbytes > self.capacity.get(name, 0)

    def record(self, name: str, nbytes: int) -> None:
        """Called once the allocation succeeded: a failed one leaves the plan as it was."""
        self.capacity[name] = nbytes


@dataclass(frozen=True)
class EngineIO:
    """The engine's I/O tensors, read from the engine itself: one input, one or more outputs (the
    stage-1 image too with --both-stages), of which `result` is the restoration."""

    input: str
    outputs: tuple[str, ...]
    result: str
    dtype: dict  # name -> numpy dtype

    @property
    def names(self) -> tuple[str, ...]:
        return (self.input, *self.outputs)


def engine_io(engine, trt, expected_outputs) -> EngineIO:
    """Lists the I/O tensors of a deserialised engine (num_io_tensors, get_tensor_mode, as
    Polygraphy's TrtRunner does) and refuses an engine that is not a HINet restorer."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = tuple(n for n in names if n not in inputs)
    return io_from_names(inputs, outputs, expected_outputs,
                         {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names})


def io_from_names(inputs, outputs, expected_outputs, dtypes) -> EngineIO:
    if len(inputs) != 1:
        raise HinetDeployError(f"the engine has inputs {inputs}; a HINet engine has exactly one")
    missing = [n for n in expected_outputs if n not in outputs]
    if missing or not outputs:
        raise HinetDeployError(f"the engine's outputs {list(outputs)} lack {missing or 'any'}, "
                               f"which its sidecar names: it is not the engine the sidecar describes")
    result = OUTPUT_NAME if OUTPUT_NAME in outputs else expected_outputs[-1] if expected_outputs \
        else outputs[0]
    return EngineIO(inputs[0], tuple(outputs), result, dtypes)


def check_sidecar(sidecar: EngineSidecar, module: str, version: str, engine: Path) -> None:
    if sidecar.tensorrt != module:
        raise HinetDeployError(f"{engine} was built with {sidecar.tensorrt}, not {module}")
    if sidecar.tensorrt_version != version:
        raise HinetDeployError(
            f"{engine} was built with {module} {sidecar.tensorrt_version} but {version} is "
            f"installed: engines only load in the version that built them; rebuild it with "
            f"hinet-deploy build")


def check_shape(shape: tuple[int, int, int, int], profile: dict) -> None:
    """The input N x 3 x H x W must lie inside the engine's optimisation profile."""
    low, high = profile["min"], profile["max"]
    if not all(a <= s <= b for a, s, b in zip(low, shape, high)):
        raise HinetDeployError(
            f"input {'x'.join(map(str, shape))} is outside the engine's profile "
            f"{'x'.join(map(str, low))} .. {'x'.join(map(str, high))}: use the Restorer's blend mode "
            f"with tile <= {min(high[2], high[3])} and batch <= {high[0]}, or rebuild with a larger "
            f"--max")


class RuntimeCacheFile:
    """TensorRT-RTX's runtime cache on disk: the kernels it JIT-compiles on the GPU at the first run,
    kept per engine build, GPU and TensorRT-RTX version in the project's cache folder, so that a
    second process does not compile them again. How TensorRT-RTX uses it (not run here: no GPU
    this project's engines run on) is from NVIDIA's documentation, "Working with Runtime Cache"
    (docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/work-with-runtime-cache.html):
    IRuntimeConfig.create_runtime_cache(), IRuntimeCache.deserialize(blob), set_runtime_cache(cache)
    on the config the execution context is created from, and IRuntimeCache.serialize() to save. A
    cache from another GPU or an older TensorRT-RTX is not used and is replaced after the run."""

    def __init__(self, engine: Path, sidecar_bytes: bytes, gpu: str, capability: tuple[int, int],
                 version: str):
        build = hashlib.sha256(sidecar_bytes).hexdigest()[:16]  # the sidecar is unique per build
        slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
        self.path = (cache_dir() / "runtime-cache" /
                     f"{Path(engine).stem}-{build}-sm{capability[0]}{capability[1]}-{slug}-"
                     f"rtx{version}.cache")

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:  # none yet, or unreadable: TensorRT-RTX compiles as without a cache
            return None

    def save(self, blob: bytes) -> bool:
        """Written whole or not at all; a cache that cannot be written costs only the next start."""
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_bytes(blob)
        except OSError as exc:
            warnings.warn(f"TensorRT-RTX's runtime cache not saved to {self.path}: {exc}",
                          stacklevel=2)
            return False
        return True


class CudaDevice:
    """The few CUDA runtime calls used here, turning error codes into HinetDeployError."""

    def __init__(self, device: int):
        self.rt = require("cuda.bindings.runtime", "running TensorRT engines")
        err, count = self.rt.cudaGetDeviceCount()
        if err != self.rt.cudaError_t.cudaSuccess or not count:
            raise HinetDeployError(f"running a TensorRT engine needs an NVIDIA GPU and driver: "
                                   f"{no_gpu_text(self.rt, err)}")
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


# Whole-image use sees a new input shape per image size; each shape's CUDA graph holds device memory
# and an executable graph, so only the most recently used few are kept.
MAX_CUDA_GRAPHS = 8


class EngineRunner:
    """Runs N x 3 x H x W batches through an execution context.

    `context` needs set_input_shape, set_tensor_address and execute_async_v3 (TensorRT's
    IExecutionContext); every return value is checked. `capture` records one CUDA graph per input
    shape (the MAX_CUDA_GRAPHS most recent kept) and replays it, falling back to plain execution for
    a shape that cannot be captured, as trtexec does; only for contexts whose TensorRT does not
    capture by itself.
    """

    def __init__(self, cuda: CudaDevice, context, io: EngineIO, profile: dict, capture: bool = False):
        self.cuda, self.context, self.io, self.profile = cuda, context, io, profile
        self.capture = capture
        self.plan = BufferPlan()
        self.device_ptr: dict[str, int] = {}
        self.host_ptr: dict[str, int] = {}
        self.graphs: OrderedDict[tuple, object] = OrderedDict()  # shape -> CUDA graph exec
        self.uncapturable: set[tuple] = set()

    def _allocate(self, kind: str, name: str, nbytes: int) -> int:
        """The device ("device") or pinned host ("host") buffer of a tensor, grown when too small."""
        rt, call = self.cuda.rt, self.cuda.call
        ptrs, key = (self.device_ptr, self.host_ptr)[kind == "host"], f"{kind}:{name}"
        if self.plan.needs(key, nbytes):
            if kind == "device":
                self._drop_graphs()  # they hold the old addresses
            if name in ptrs:
                call((rt.cudaFree if kind == "device" else rt.cudaFreeHost)(ptrs.pop(name)))
            ptrs[name] = call((rt.cudaMalloc if kind == "device" else rt.cudaMallocHost)(nbytes))
            self.plan.record(key, nbytes)
        return ptrs[name]

    def _nbytes(self, name: str, shape) -> int:
        return int(np.prod(shape)) * self.io.dtype[name].itemsize

    def _device_buffers(self, shape) -> dict[str, int]:
        return {n: self._allocate("device", n, self._nbytes(n, shape)) for n in self.io.names}

    def _host_view(self, name: str, shape) -> np.ndarray:
        dtype = self.io.dtype[name]
        count = int(np.prod(shape))
        ptr = self._allocate("host", name, count * dtype.itemsize)
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def _launch(self) -> bool:
        """execute_async_v3 on the runner's stream; False where TensorRT could not enqueue."""
        return bool(self.context.execute_async_v3(int(self.cuda.stream)))

    def _run_once(self, shape) -> None:
        if not self._launch():
            raise HinetDeployError(f"the engine failed to run at {'x'.join(map(str, shape))}")

    def _bind(self, shape, addresses: dict[str, int]) -> None:
        if not self.context.set_input_shape(self.io.input, tuple(shape)):
            raise HinetDeployError(f"the engine refused input shape {'x'.join(map(str, shape))}")
        for name, address in addresses.items():
            if not self.context.set_tensor_address(name, address):
                raise HinetDeployError(f"the engine refused the address of tensor {name!r}")

    def _execute(self, shape, addresses: dict[str, int]) -> None:
        """The engine on the runner's stream, on the given tensor addresses."""
        self._bind(shape, addresses)
        shape = tuple(shape)
        if self.capture and shape not in self.uncapturable and self._replay(shape):
            return
        self._run_once(shape)

    def _capture(self, shape: tuple):
        """An instantiated CUDA graph of the engine at this shape, or None where capture fails."""
        rt, stream = self.cuda.rt, self.cuda.stream
        # The first run does the work TensorRT defers to it (allocations, shape set-up), which
        # stream capture forbids; the second is recorded.
        self._run_once(shape)
        self.cuda.call(rt.cudaStreamSynchronize(stream))
        err, = rt.cudaStreamBeginCapture(
            stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        if err != rt.cudaError_t.cudaSuccess:
            return None
        ran = self._launch()
        err, graph = rt.cudaStreamEndCapture(stream)
        if err != rt.cudaError_t.cudaSuccess or graph is None:
            return None
        try:
            if not ran:
                return None
            err, graph_exec = rt.cudaGraphInstantiate(graph, 0)
            return graph_exec if err == rt.cudaError_t.cudaSuccess else None
        finally:
            rt.cudaGraphDestroy(graph)  # the executable graph does not need it

    def _replay(self, shape: tuple) -> bool:
        """Launches the shape's graph, capturing it first; False where it cannot be captured."""
        if shape not in self.graphs:
            graph = self._capture(shape)
            if graph is None:
                self.uncapturable.add(shape)
                return False
            self.graphs[shape] = graph
            while len(self.graphs) > MAX_CUDA_GRAPHS:
                _, oldest = self.graphs.popitem(last=False)
                self.cuda.rt.cudaGraphExecDestroy(oldest)
        self.graphs.move_to_end(shape)
        self.cuda.call(self.cuda.rt.cudaGraphLaunch(self.graphs[shape], self.cuda.stream))
        return True

    def _drop_graphs(self) -> None:
        for graph in self.graphs.values():
            self.cuda.rt.cudaGraphExecDestroy(graph)
        self.graphs = OrderedDict()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """numpy in, numpy out, through pinned host buffers."""
        rt, call, stream = self.cuda.rt, self.cuda.call, self.cuda.stream
        shape = tuple(batch.shape)
        check_shape(shape, self.profile)
        device = self._device_buffers(shape)
        src, dst = self.io.input, self.io.result
        np.copyto(self._host_view(src, shape), batch, casting="same_kind")
        out = self._host_view(dst, shape)
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(rt.cudaMemcpyAsync(device[src], self.host_ptr[src], self._nbytes(src, shape), h2d,
                                stream))
        self._execute(shape, device)
        call(rt.cudaMemcpyAsync(self.host_ptr[dst], device[dst], self._nbytes(dst, shape), d2h,
                                stream))
        call(rt.cudaStreamSynchronize(stream))
        return out.astype(np.float32)

    def run_device(self, batch):
        """A torch CUDA tensor in, a float32 torch CUDA tensor out: the engine reads and writes the
        tensors' own memory (with CUDA graphs, one device-to-device copy each way into the graph's
        fixed buffers). Ordered after the caller's current stream, and before it again. No host
        buffer is touched."""
        import torch

        shape = tuple(batch.shape)
        check_shape(shape, self.profile)
        if batch.device.type != "cuda" or batch.device.index != self.cuda.device:
            raise HinetDeployError(f"the engine runs on cuda:{self.cuda.device}; the tensor is on "
                                   f"{batch.device}")
        tensors = {self.io.input: batch.to(getattr(torch, self.io.dtype[self.io.input].name))
                   .contiguous()}
        for name in self.io.outputs:
            tensors[name] = torch.empty(shape, dtype=getattr(torch, self.io.dtype[name].name),
                                        device=batch.device)
        caller = torch.cuda.current_stream(batch.device)
        ours = torch.cuda.ExternalStream(int(self.cuda.stream), device=batch.device)
        ours.wait_stream(caller)
        for tensor in tensors.values():
            tensor.record_stream(ours)  # the caching allocator must not hand these out meanwhile
        if self.capture:  # the graph holds its own buffers' addresses
            self._run_through_graph_buffers(shape, tensors)
        else:
            self._execute(shape, {n: t.data_ptr() for n, t in tensors.items()})
        caller.wait_stream(ours)
        return tensors[self.io.result].float()

    def _run_through_graph_buffers(self, shape, tensors) -> None:
        rt, call, stream = self.cuda.rt, self.cuda.call, self.cuda.stream
        device = self._device_buffers(shape)
        d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        src, dst = self.io.input, self.io.result
        call(rt.cudaMemcpyAsync(device[src], tensors[src].data_ptr(), self._nbytes(src, shape),
                                d2d, stream))
        self._execute(shape, device)
        call(rt.cudaMemcpyAsync(tensors[dst].data_ptr(), device[dst], self._nbytes(dst, shape),
                                d2d, stream))

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


@dataclass(frozen=True)
class TensorRtOptions:
    device: int = option(0, "the CUDA device's index", cli=False)
    cuda_graph: bool = option(False, "TensorRT: replay each shape's work as a CUDA graph")


class TensorRtBackend(BackendBase):
    """A TensorRT (or TensorRT-RTX) engine on a CUDA GPU, checked against its sidecar first."""

    name = "tensorrt"
    suffixes = (".engine", ".plan")
    extra = "trt"
    requires = ("tensorrt_rtx", "cuda")
    Options = TensorRtOptions

    @classmethod
    def check_runs(cls, models) -> list:
        return [(precision, engine, ()) for precision, engine in models.engines.items()]

    @classmethod
    def model_files(cls, path: Path) -> list[Path]:
        """The engine, its sidecar and the graph the sidecar names where it lies inside the
        engine's folder (a graph elsewhere, or a path leading out, is neither read nor shipped:
        running the engine does not need it); the engine's size and the graph's hash checked."""
        path = Path(path)
        sidecar = read_sidecar(path)
        check_recorded(path, "engine", size=sidecar.facts.get("engine_bytes"))
        files = [path, sidecar_path(path)]
        try:
            graph = sidecar.path_fact("onnx", path)
        except HinetDeployError:
            return files
        if graph is not None and graph.is_file():
            check_recorded(graph, "the engine's graph", sha256=sidecar.facts.get("onnx_sha256"))
            files.append(graph)
        return files

    def __init__(self, path, device: int = 0, cuda_graph: bool = False):
        self.path = Path(path)
        self.sidecar = read_sidecar(self.path)
        check_recorded(self.path, "engine", size=self.sidecar.facts.get("engine_bytes"))
        trt_module = import_tensorrt(self.sidecar.tensorrt, f"running {self.path.name}")
        check_sidecar(self.sidecar, trt_module.name, trt_module.version, self.path)
        self.module = trt_module.name  # tensorrt or tensorrt_rtx
        # Targets named at build time; TensorRT-RTX's defaults include GPUs newer than their list.
        self.named_targets = [] if self.sidecar.facts.get("default_targets") else \
            list(self.sidecar.compute_capabilities)
        profile = self.sidecar.profile
        self.limits = SizeLimits(multiple=self.sidecar.size_multiple, max_batch=profile["max"][0],
                                 max_hw=(profile["max"][2], profile["max"][3]))
        if self.sidecar.hin_plugin:
            self._register_plugin(trt_module)  # before the GPU: a missing NVRTC is said first
        self.cuda = CudaDevice(device)
        self.runner = self.engine = self.runtime_config = self.runtime_cache = None
        self.cache_file, self.cache_saved = None, False
        try:
            self._load(trt_module, cuda_graph)
        except BaseException:
            self.cuda.close()  # the stream; nothing else is held yet
            raise

    def _deserialise(self, trt_module):
        trt = trt_module.module
        logger = collecting_logger(trt)  # the process's one logger, shared with builds
        with logger.capture() as messages:
            self.runtime = trt.Runtime(logger)
            engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            why = gpu_mismatch(trt_module.name, self.cuda.capability, self.cuda.name,
                               self.named_targets)
            said = " | ".join(messages)[-1000:]
            raise HinetDeployError(f"{trt_module.name} could not deserialise {self.path} on "
                                   f"{self.cuda.name}: {why or said or 'no message'}")
        return engine

    def _load(self, trt_module, cuda_graph: bool) -> None:
        if trt_module.name == "tensorrt_rtx" and not rtx_runs_on(self.cuda.capability):
            raise HinetDeployError(f"{self.path} cannot run here: " + gpu_mismatch(
                trt_module.name, self.cuda.capability, self.cuda.name, []))
        trt = trt_module.module
        self.engine = self._deserialise(trt_module)
        io = engine_io(self.engine, trt, self.sidecar.outputs)
        native_graphs = hasattr(trt, "CudaGraphStrategy")  # TensorRT-RTX captures by itself
        if trt_module.name == "tensorrt_rtx":
            # Kept on the backend for the context's whole life, as NVIDIA's RTX samples keep it.
            self.runtime_config = self.engine.create_runtime_config()
            self._attach_runtime_cache(trt_module)
            if cuda_graph:
                self.runtime_config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            context = self.engine.create_execution_context(self.runtime_config)
        else:
            context = self.engine.create_execution_context()
        if context is None:
            raise HinetDeployError(f"{trt_module.name} could not create an execution context for "
                                   f"{self.path} (out of GPU memory?)")
        self.runner = EngineRunner(self.cuda, context, io, self.sidecar.profile,
                                   capture=cuda_graph and not native_graphs)

    def _register_plugin(self, trt_module) -> None:
        """The engine holds fused HIN plugin layers: their creator must be registered before it is
        deserialised, by the plugin version the engine was built with."""
        built = self.sidecar.facts.get("hin_plugin_version", PLUGIN_VERSION)
        if str(built) != PLUGIN_VERSION:
            raise HinetDeployError(f"{self.path} holds version {built} of the HIN plugin; this "
                                   f"hinet-deploy has version {PLUGIN_VERSION}: rebuild the engine")
        register_plugin(trt_module)

    def _attach_runtime_cache(self, trt_module) -> None:
        self.cache_file = RuntimeCacheFile(self.path, sidecar_path(self.path).read_bytes(),
                                           self.cuda.name, self.cuda.capability,
                                           trt_module.version)
        self.runtime_cache = self.runtime_config.create_runtime_cache()
        blob = self.cache_file.load()
        if blob is not None and not self.runtime_cache.deserialize(blob):
            self.runtime_cache.reset()  # unusable: start empty, replaced after the first run
        self.runtime_config.set_runtime_cache(self.runtime_cache)

    def _save_runtime_cache(self) -> None:
        if self.runtime_cache is not None:
            self.cache_file.save(bytes(self.runtime_cache.serialize()))
            self.cache_saved = True

    def run_impl(self, batch: np.ndarray) -> np.ndarray:
        out = self.runner.run(batch)
        if not self.cache_saved:  # after the first run: its kernels are compiled now
            self._save_runtime_cache()
        return out

    def run_device_impl(self, batch):
        out = self.runner.run_device(batch)
        if not self.cache_saved:
            self._save_runtime_cache()
        return out

    def close_impl(self) -> None:
        if self.runner is not None:
            self._save_runtime_cache()  # with what later shapes compiled too
            self.runner.close()
            self.cuda.close()
        self.runner = self.engine = self.runtime_config = self.runtime_cache = None
