"""`hinet-deploy validate`: every available backend and precision against the PyTorch reference and
the clean images, per image and in total, with a report people can look at.

Images are the outer loop, so an interrupted run has complete results for the images it finished;
the JSON is rewritten after each image. The contenders take turns going first, image by image,
as every check's rounds alternate (checks.timing: a fixed order favours whoever runs second).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA
from hinet_deploy.checks.datasets import Dataset
from hinet_deploy.checks.report import write_report
from hinet_deploy.common.files import DEFAULT_OUTPUT_DIR
from hinet_deploy.common.progress import say
from hinet_deploy.build.flow import GraphRequest, engines_for_checks
from hinet_deploy.checks.contenders import BASELINE, contenders
from hinet_deploy.checks.timing import device_name
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime.metrics import psnr, ssim
from hinet_deploy.runtime.tiling import DEFAULT_MODE

@dataclass
class ImageResult:
    name: str
    psnr: float  # vs clean
    ssim: float
    psnr_vs_torch: float
    seconds: float


@dataclass
class ContenderResult:
    backend: str
    precision: str
    model: str
    images: list[ImageResult] = field(default_factory=list)

    def summary(self) -> dict:
        if not self.images:
            return {}
        worst = min(self.images, key=lambda r: r.psnr)
        return {"psnr": statistics.fmean(r.psnr for r in self.images),
                "ssim": statistics.fmean(r.ssim for r in self.images),
                "psnr_vs_torch": statistics.fmean(r.psnr_vs_torch for r in self.images),
                "worst_psnr_vs_torch": min(r.psnr_vs_torch for r in self.images),
                "worst_image": {"name": worst.name, "psnr": worst.psnr},
                "seconds_per_image": statistics.median(r.seconds for r in self.images)}


class Validation:
    def __init__(self, ckpt: Path, dataset: Dataset, req: GraphRequest, mode: str,
                 engines=None):
        self.ckpt, self.dataset, self.mode = ckpt, dataset, mode
        self.restorers = {}
        self.results = {}
        engines, self.unavailable = engines if engines is not None else engines_for_checks(req)
        for c in contenders(ckpt, req, engines):
            self.restorers[c.key] = Restorer(c.model, backend=c.backend, mode=mode,
                                             **dict(c.options))
            self.results[c.key] = ContenderResult(c.backend, c.precision, str(c.model))
        self.interrupted = False
        self.images_done = 0
        self.sample = None  # (name, degraded, clean, {key: output}) of the first image

    def run(self, json_path: Path | None, log=say) -> dict:
        if self.dataset.unmatched:
            shown = self.dataset.unmatched[:5]
            more = len(self.dataset.unmatched) - len(shown)
            log(f"left out {len(self.dataset.unmatched)} files without their pair: "
                f"{', '.join(shown)}{f' and {more} more' if more > 0 else ''}")
        try:
            for index, pair in enumerate(self.dataset, 1):
                self._one_image(pair)
                log(f"[{index}/{len(self.dataset)}] {pair.name}")
                if json_path:
                    self.write_json(json_path)
        except KeyboardInterrupt:
            self.interrupted = True
            log("interrupted: keeping the images finished so far")
        finally:
            for restorer in self.restorers.values():
                restorer.close()
        if json_path:
            self.write_json(json_path)
        return self.as_dict()

    def _one_image(self, pair) -> None:
        degraded, clean = pair.load()
        outputs, seconds = {}, {}
        keys = list(self.restorers)
        turn = self.images_done % len(keys)  # who goes first rotates image by image (checks.timing)
        for key in keys[turn:] + keys[:turn]:
            start = time.perf_counter()
            outputs[key] = self.restorers[key](degraded)
            seconds[key] = time.perf_counter() - start
        self.images_done += 1
        outputs = {key: outputs[key] for key in keys}  # reported in the contenders' order
        reference = outputs[BASELINE]
        for key, out in outputs.items():
            self.results[key].images.append(ImageResult(
                pair.name, psnr(out, clean), ssim(out, clean), psnr(out, reference), seconds[key]))
        if self.sample is None:
            self.sample = (pair.name, degraded, clean, outputs)

    def as_dict(self) -> dict:
        return {
            "checkpoint": str(self.ckpt), "dataset": self.dataset.description, "mode": self.mode,
            "unmatched": self.dataset.unmatched,
            "device": device_name(), "interrupted": self.interrupted,
            "metrics": "PSNR/SSIM on RGB, no border crop, 8-bit; SSIM: 11x11 Gaussian, sigma 1.5",
            "results": [{"contender": f"{r.backend}:{r.precision}", "backend": r.backend,
                         "precision": r.precision, "model": r.model,
                         **r.summary(), "images": [asdict(i) for i in r.images]}
                        for r in self.results.values()],
            "unavailable": self.unavailable,
        }

    def write_json(self, path: Path) -> None:
        write_report(path, self.as_dict())


def validate(ckpt: Path | None = None, data: Path | None = None, sigma: float = DEMO_NOISE_SIGMA,
             mode: str = DEFAULT_MODE, out_dir: Path = DEFAULT_OUTPUT_DIR / "validate",
             json_path: Path | None = None) -> tuple[dict, str]:
    """The whole of `hinet-deploy validate`: runs, writes report.md, the JSON and the figures.

    Returns the report (as in the JSON) and its Markdown text.
    """
    from hinet_deploy.checks import figures
    from hinet_deploy.checks.datasets import open_dataset
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    ckpt = Path(ckpt or DEMO_CHECKPOINT)
    out_dir = Path(out_dir)
    req = GraphRequest(ckpt=ckpt, out_dir=out_dir / "graphs")
    validation = Validation(ckpt, open_dataset(data, sigma), req, mode)
    report = validation.run(json_path or out_dir / "report.json")
    text = markdown(report)
    write_report(None, report, text, out_dir / "report.md")
    if validation.sample is not None:
        figures.latency_vs_psnr(report, out_dir / "latency_vs_psnr.png")
        figures.crop_grid(validation.sample, out_dir / "crops.png")
    return report, text


def markdown(report: dict) -> str:
    lines = [f"# HINet validation: {Path(report['checkpoint']).name}", "",
             f"- dataset: {report['dataset']}", f"- mode: {report['mode']}",
             f"- device: {report['device']}", f"- {report['metrics']}"]
    if report["interrupted"]:
        lines.append("- **interrupted**: results cover the images finished before the stop")
    lines += ["", "| contender | PSNR | SSIM | PSNR vs PyTorch (mean / worst) | worst image | "
              "s / image |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        if "psnr" not in r:
            continue
        vs = "reference" if (r["backend"], r["precision"]) == BASELINE else \
            f"{_db(r['psnr_vs_torch'])} / {_db(r['worst_psnr_vs_torch'])}"
        lines.append(f"| {r['backend']}:{r['precision']} | {_db(r['psnr'])} | {r['ssim']:.4f} | "
                     f"{vs} | {r['worst_image']['name']} ({_db(r['worst_image']['psnr'])}) | "
                     f"{r['seconds_per_image']:.2f} |")
    lines += ["", "Not run here:", ""]
    lines += [f"- {u['backend']}:{u['precision']}: {u['reason']}" for u in report["unavailable"]]
    lines += ["", "![latency vs PSNR](latency_vs_psnr.png)", "", "![crops](crops.png)", ""]
    return "\n".join(lines)


def _db(value) -> str:
    return "inf" if value is None or not np.isfinite(value) else f"{value:.2f} dB"
