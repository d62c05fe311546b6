"""`hinet-deploy claims`: the paper's MACs and speed-up claims against MPRNet, measured side by side.

Each claim pairs an official HINet variant with the MPRNet configuration the paper compares it to
(HINet Table 4: 1x3x256x256, batch 1, PyTorch on a Tesla V100). Both networks carry random weights:
neither MACs nor run time depend on the values. For every backend, all models run once to warm up,
then take turns round after round, the first of each round rotating, so a slow phase of a noisy
machine hits them alike; medians and their spread are reported, and the speed-up is the ratio of
MPRNet's median to HINet's. The timing runs with freed memory kept in the process
(checks.timing.freed_memory_kept): in glibc's default regime a wide network's CPU time depends on
whether its tensors happen to reuse pages, which moved MPRNet's deblurring time by a fifth from one
process to the next. MACs come from one counter for both (export.macs, on the ONNX graphs);
parameters from the PyTorch modules (MPRNet reuses its stage-1 and stage-2 weights on every patch,
which a per-node count of the graph would count again).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.checks.figures import claims_chart
from hinet_deploy.checks.report import write_report
from hinet_deploy.common.limits import HINET_SIZE_MULTIPLE
from hinet_deploy.common.progress import say
from hinet_deploy.runtime.backends import BACKENDS as BACKEND_TABLE
from hinet_deploy.runtime.backends import ModelFiles
from hinet_deploy.checks.timing import (alternated_rounds, device_name, freed_memory_kept,
                                        spread_ms)


@dataclass(frozen=True)
class Claim:
    hinet: str  # official HINet variant
    mprnet: str  # MPRNet task configuration
    paper_hinet_gmacs: float
    paper_mprnet_gmacs: float
    paper_hinet_ms: float
    paper_mprnet_ms: float
    paper_speedup: float  # as the paper states it

    @property
    def paper_macs_share(self) -> float:
        return 100 * self.paper_hinet_gmacs / self.paper_mprnet_gmacs


# HINet paper, Table 4 (V100, PyTorch, 1x3x256x256); speed-ups as stated in its text.
CLAIMS = {
    "sidd-0.5x": Claim("sidd-0.5x", "denoise", 42.88, 573.50, 11.6, 78.8, 6.8),
    "sidd-1x": Claim("sidd-1x", "denoise", 170.71, 573.50, 27.0, 78.8, 2.9),
    "gopro": Claim("gopro", "deblur", 170.71, 760.11, 27.0, 90.1, 3.3),
    "reds": Claim("reds", "deblur", 170.71, 760.11, 27.0, 90.1, 3.3),
    "rain13k": Claim("rain13k", "derain", 170.71, 141.28, 27.0, 37.4, 1.4),
}
# The networks run eagerly in PyTorch (MPRNet is no checkpoint the backend table opens), and as
# their verified graphs through every backend of the table that runs an FP32 graph here, each
# named `backend:precision`. The earlier spellings are still taken.
PYTORCH, PYTORCH_FP16 = "pytorch:fp32", "pytorch:fp16"  # FP16: on a CUDA GPU only
ALIASES = {"pytorch": PYTORCH, "pytorch-fp16": PYTORCH_FP16, "onnxruntime": "onnxruntime:fp32",
           "openvino": "openvino:fp32", "openvino-bf16": "openvino:bf16"}


def graph_contenders(graph: Path | None = None) -> dict[str, tuple]:
    """`backend:precision` -> (backend class, options) for each way a row of the backend table runs
    an FP32 graph here (the checkpoint row aside: the networks run eagerly above)."""
    models = ModelFiles(Path("checkpoint.pth"), {"fp32": graph or Path("graph.onnx")})
    return {f"{name}:{precision}": (cls, dict(options))
            for name, cls in BACKEND_TABLE.items() if ".onnx" in cls.suffixes
            for precision, _, options in cls.check_runs(models)}


def backend_names() -> tuple[str, ...]:
    """What `claims --backends` takes: the eager rows, the table's graph contenders, the aliases."""
    return (PYTORCH, PYTORCH_FP16, *graph_contenders(), *ALIASES)


def canonical(backend: str) -> str:
    return ALIASES.get(backend, backend)


@dataclass
class Model:
    name: str  # "HINet gopro", "MPRNet deblur"
    module: object  # the torch module; both return a list or tuple of images
    params: int
    macs: int = 0
    macs_paper: int = 0
    graph: Path | None = None


def _models(claims: list[str], folder: Path, height: int, width: int, log) -> dict[str, Model]:
    """Each distinct network once (gopro and reds share one architecture, sidd-0.5x and -1x one
    MPRNet), with its MACs counted on a verified ONNX graph at the measured size."""
    import onnx
    import torch

    from hinet_deploy.export.checkpoint import random_model
    from hinet_deploy.export.macs import count_macs
    from hinet_deploy.export.mprnet import export_mprnet_onnx, mprnet
    from hinet_deploy.export.onnx_export import export_onnx

    models: dict[str, Model] = {}
    for claim in (CLAIMS[c] for c in claims):
        for name in (_hinet_name(claim.hinet), f"MPRNet {claim.mprnet}"):
            if name in models:
                continue
            graph = folder / (name.replace(" ", "-") + f".{height}x{width}.onnx")
            log(f"{name}: exporting a verified ONNX graph at {height}x{width}")
            if name.startswith("HINet"):
                loaded = random_model(name.split()[1])
                export_onnx(loaded, graph, fixed_shape=(1, height, width), log=lambda m: None)
                net = loaded.net
            else:
                torch.manual_seed(0)
                net = mprnet(claim.mprnet).eval()
                export_mprnet_onnx(net, graph, height, width)
            count = count_macs(onnx.load(str(graph)), height, width)
            params = sum(p.numel() for p in net.parameters())
            models[name] = Model(name, net, params, count.macs, count.macs_paper, graph)
    return models


def _hinet_name(variant: str) -> str:
    """One model per architecture, timed once: gopro and reds are the same network, and so are
    sidd-1x and rain13k (width 64, HIN at every encoder level)."""
    from hinet_deploy.export.variants import OFFICIAL_VARIANTS

    config = OFFICIAL_VARIANTS[variant].config
    return "HINet " + next(v for v, spec in OFFICIAL_VARIANTS.items() if spec.config == config)


def _runners(models: dict[str, Model], backend: str, height: int, width: int, threads):
    """name -> a callable running one 1x3xHxW input (synchronised on a GPU)."""
    import torch

    x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    graph_backends = graph_contenders()
    if backend in graph_backends:  # the verified ONNX graphs of both networks
        cls, fixed = graph_backends[backend]
        if backend == "onnxruntime:fp32":  # ONNX Runtime on the CPU, where the claims compare
            fixed = {**fixed, "providers": ("CPUExecutionProvider",)}
        options = {**fixed, **(cls.worker_options(threads) if threads else {})}
        opened = {name: cls(model.graph, **options) for name, model in models.items()}
        return {name: (lambda b=b: b.run(x)) for name, b in opened.items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend not in (PYTORCH, PYTORCH_FP16):
        raise HinetDeployError(f"claims cannot run {backend} here; choose "
                               f"{', '.join(backend_names())}")
    if backend == PYTORCH_FP16 and device != "cuda":
        raise HinetDeployError(f"{PYTORCH_FP16} needs a CUDA GPU")
    dtype = torch.float16 if backend == PYTORCH_FP16 else torch.float32
    tensor = torch.from_numpy(x).to(device, dtype)

    def run(model):
        with torch.inference_mode():
            model.module(tensor)
        if device == "cuda":
            torch.cuda.synchronize()

    for model in models.values():
        model.module.to(device, dtype)
    return {name: (lambda m=model: run(m)) for name, model in models.items()}


def _time(runners: dict, repeats: int, log) -> dict[str, list[float]]:
    for run in runners.values():
        run()  # warm-up, excluded
    return alternated_rounds(runners, repeats, lambda r: log(f"round {r}/{repeats}"))


def measure_claims(claims=tuple(CLAIMS), backends=(PYTORCH, "onnxruntime:fp32"), size=(256, 256),
                   repeats: int = 5, threads: int | None = None, log=None) -> dict:
    import torch

    log = log or say
    backends = tuple(dict.fromkeys(canonical(b) for b in backends))
    unknown = [c for c in claims if c not in CLAIMS]
    if unknown:
        raise HinetDeployError(f"unknown claim {', '.join(unknown)}; choose {', '.join(CLAIMS)}")
    height, width = size
    if height % HINET_SIZE_MULTIPLE or width % HINET_SIZE_MULTIPLE:
        raise HinetDeployError(f"--size {height} {width}: both must be multiples of "
                               f"{HINET_SIZE_MULTIPLE} (HINet needs {HINET_SIZE_MULTIPLE}, MPRNet 8)")
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp, freed_memory_kept() as allocator:
        models = _models(list(claims), Path(tmp), height, width, log)
        latencies = {}
        for backend in backends:
            log(f"timing {len(models)} models with {backend}, {repeats} alternated rounds")
            runners = _runners(models, backend, height, width, threads)
            latencies[backend] = {k: spread_ms(v) for k, v in _time(runners, repeats, log).items()}
    tasks = [_task(name, CLAIMS[name], models, latencies) for name in claims]
    return {"device": device_name(), "size": [height, width], "batch": 1,
            "repeats": repeats, "threads": threads, "backends": list(backends),
            "order": "alternating rounds after one warm-up each", "allocator": allocator,
            "macs": "exact: conv multiply-accumulates; paper: the thop convention (transposed convs "
                    "over their output, bias ops); one counter for both networks",
            "models": {n: {"params": m.params, "macs": m.macs, "macs_paper": m.macs_paper}
                       for n, m in models.items()},
            "tasks": tasks}


def _task(name: str, claim: Claim, models: dict[str, Model], latencies: dict) -> dict:
    hinet, mpr = models[_hinet_name(claim.hinet)], models[f"MPRNet {claim.mprnet}"]
    return {
        "task": name, "hinet": f"HINet {claim.hinet}", "mprnet": mpr.name,
        "timed_as": hinet.name,  # the same architecture is timed once (gopro = reds, 1x = rain13k)
        "macs": {"hinet": hinet.macs, "mprnet": mpr.macs, "hinet_paper": hinet.macs_paper,
                 "mprnet_paper": mpr.macs_paper},
        "params": {"hinet": hinet.params, "mprnet": mpr.params},
        "macs_share": 100 * hinet.macs_paper / mpr.macs_paper,
        "macs_share_exact": 100 * hinet.macs / mpr.macs,
        "paper_macs_share": claim.paper_macs_share,
        "paper_gmacs": {"hinet": claim.paper_hinet_gmacs, "mprnet": claim.paper_mprnet_gmacs},
        "latency": {b: {"hinet": lat[hinet.name], "mprnet": lat[mpr.name]}
                    for b, lat in latencies.items()},
        "speedup": {b: lat[mpr.name]["median_ms"] / lat[hinet.name]["median_ms"]
                    for b, lat in latencies.items()},
        "paper_speedup": claim.paper_speedup,
        "paper_ms": {"hinet": claim.paper_hinet_ms, "mprnet": claim.paper_mprnet_ms},
    }


def markdown(report: dict) -> str:
    h, w = report["size"]
    backends = report["backends"]
    lines = [f"device: {report['device']}; input 1x3x{h}x{w}; {report['threads'] or 'default'} "
             f"threads; median of {report['repeats']} alternated rounds (min-max); allocator: "
             f"{report.get('allocator', 'not recorded')}", "",
             "| claim | G MACs HINet / MPRNet (paper conv.) | MACs share (paper) | "
             + " | ".join(f"{b}: HINet / MPRNet ms, speed-up" for b in backends)
             + " | paper speed-up |",
             "|---|---|---|" + "---|" * len(backends) + "---|"]
    for t in report["tasks"]:
        macs = t["macs"]
        cells = [f"{t['task']} ({t['hinet']} vs {t['mprnet']})",
                 f"{macs['hinet_paper'] / 1e9:.2f} / {macs['mprnet_paper'] / 1e9:.2f}",
                 f"{t['macs_share']:.1f} % ({t['paper_macs_share']:.1f} %)"]
        for b in backends:
            lat = t["latency"][b]
            cells.append(f"{_ms(lat['hinet'])} / {_ms(lat['mprnet'])}, **{t['speedup'][b]:.2f}x**")
        cells.append(f"{t['paper_speedup']:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(spread: dict) -> str:
    return f"{spread['median_ms']:.0f} ({spread['min_ms']:.0f}-{spread['max_ms']:.0f})"


def write_outputs(report: dict, json_path: Path) -> tuple[Path, Path]:
    """The JSON, a Markdown table beside it (.md) and the chart (.png)."""
    png = json_path.with_suffix(".png")
    _, md, _ = write_report(json_path, report, markdown(report),
                            figures={png: lambda path: claims_chart(report, path)})
    return md, png
