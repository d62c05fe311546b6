"""The one way the checks write what they found: the JSON (NaN and infinities as null, which JSON
lacks), its Markdown beside it (`.md`) and its figures, each atomically, the same for validate,
bench, fidelity, claims and sensitivity."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from hinet_deploy.common.files import atomic_path


def finite(obj):
    """The report with every non-finite float as None (identical images have an infinite PSNR)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_report(json_path: Path | None, data, markdown: str | None = None,
                 markdown_path: Path | None = None,
                 figures: dict[Path, Callable[[Path], None]] | None = None) -> list[Path]:
    """Writes the JSON at `json_path`, the Markdown at `markdown_path` (default: beside the JSON,
    `.md`) and each figure by its function, given the path to write; returns the paths written."""
    written = []
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(finite(data), indent=2) + "\n")
        written.append(Path(json_path))
    if markdown is not None:
        md = Path(markdown_path or Path(json_path).with_suffix(".md"))
        with atomic_path(md) as tmp:
            tmp.write_text(markdown.rstrip("\n") + "\n")
        written.append(md)
    for path, draw in (figures or {}).items():
        draw(Path(path))
        written.append(Path(path))
    return written
