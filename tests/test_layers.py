"""The layers import one way: common <- export <- calib <- engines <- runtime <- the CLI/pipelines.

Read from the source with `ast`, so an import hidden inside a function counts as much as one at the
top. The README's layout section states the same rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

# Each layer may import the ones before it. The top (hinet_deploy/*.py: CLI, pipelines, reports)
# may import everything and is imported by no layer.
ORDER = ["common", "export", "calib", "engines", "runtime"]
FOLDERS = {"common": REPO / "hinet_deploy" / "common", **{s: REPO / s for s in ORDER[1:]}}
# The card's user-facing scripts live in export/ but chain every stage: they call the CLI.
SCRIPTS = {"to_onnx.py", "build_trt.py"}


def _layer_of(module: str) -> str | None:
    """The layer of a hinet_deploy module name; 'top' for the root package's own modules."""
    parts = module.split(".")
    if parts[0] != "hinet_deploy":
        return None
    if len(parts) == 1:
        return "root"  # the package itself: the error type and version, nothing else
    return parts[1] if parts[1] in ORDER else "top"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(layer: str, folder: Path | None = None) -> list[str]:
    allowed = set(ORDER[:ORDER.index(layer) + 1])
    folder = folder or FOLDERS[layer]
    bad = []
    for path in sorted(p for p in folder.rglob("*.py") if p.name not in SCRIPTS):
        for line, module in _imports(path):
            target = _layer_of(module)
            if target is not None and target not in allowed:
                bad.append(f"{path.relative_to(folder)}:{line} imports {module} ({target})")
    return bad


@pytest.mark.parametrize("layer", ORDER)
def test_layer_imports_only_earlier_layers(layer):
    assert _violations(layer) == []


def test_the_rule_catches_backward_imports(tmp_path):
    (tmp_path / "bad.py").write_text("import numpy\nfrom hinet_deploy.common.errors import E\n"
                                     "def f():\n    from hinet_deploy.runtime import Restorer\n"
                                     "    import hinet_deploy.cli\n")
    assert _violations("export", tmp_path) == [
        "bad.py:4 imports hinet_deploy.runtime (runtime)", "bad.py:5 imports hinet_deploy.cli (top)"]


def test_the_root_package_imports_only_common():
    imported = {_layer_of(m) for _, m in _imports(REPO / "hinet_deploy" / "__init__.py")}
    assert imported - {None} <= {"common"}


def test_stages_never_use_generic_top_level_names():
    """Inside the package, `export`, `runtime`, ... are always reached through hinet_deploy."""
    generic = {"export", "calib", "engines", "runtime"}
    bad = [f"{p.relative_to(REPO)}:{line} {m}"
           for folder in [*FOLDERS.values(), REPO / "hinet_deploy"]
           for p in folder.rglob("*.py") for line, m in _imports(p)
           if m.split(".")[0] in generic]
    assert bad == []
