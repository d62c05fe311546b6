"""The layers import one way: common <- export <- calib <- engines <- runtime <- the top (the rooms
restore, build, checks, demo and the CLI). No module takes another's private names, nothing imports
in a cycle, and the two restore runners never import each other.

Read from the source with `ast`, so an import hidden inside a function counts as much as one at the
top. The README's layout section states the same rules.
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


# Where each importable module's source lives: setuptools' package-dir (pyproject.toml) mapped back.
ROOTS = {"hinet_deploy": REPO / "hinet_deploy", **{f"hinet_deploy.{s}": REPO / s for s in ORDER[1:]}}


def _project_modules() -> dict[str, Path]:
    """Every module of the installed package, by its import name."""
    modules = {}
    for prefix, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            if path.name in SCRIPTS:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


def _imported(path: Path, modules: dict[str, Path]):
    """(line, module imported, names taken from it) for each project import in `path`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module in modules and node.level == 0:
            names = [a.name for a in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules]
            yield node.lineno, node.module, [n for n in names
                                             if f"{node.module}.{n}" not in modules]
            for sub in submodules:
                yield node.lineno, sub, []


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {name: {target for _, target, _ in _imported(path, modules) if target != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert _cycles(_graph(_project_modules())) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def _private_imports(paths, modules) -> list[str]:
    bad = []
    for path in paths:
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        for line, module, names in _imported(path, modules):
            bad += [f"{shown}:{line} takes {module}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
    return bad


def test_no_module_takes_another_modules_private_names():
    modules = _project_modules()
    others = [p for folder in (REPO / "tests", REPO / "benchmarks") for p in folder.rglob("*.py")]
    assert _private_imports([*modules.values(), *others], modules) == []


def test_the_private_rule_catches_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from hinet_deploy.restore.plan import Job, _LocalTree\n")
    modules = _project_modules()
    assert [b.split(" takes ")[1] for b in _private_imports([bad], modules)] == [
        "hinet_deploy.restore.plan._LocalTree"]


def test_the_restore_runners_do_not_import_each_other():
    modules = _project_modules()
    graph = _graph(modules)
    local, cluster = "hinet_deploy.restore.local", "hinet_deploy.restore.cluster"
    assert local in modules and cluster in modules
    assert cluster not in graph[local] and local not in graph[cluster]


# What restoring needs (`restore`, the Restorer, Ray) installs with the runtime extras alone
# (`[onnxruntime,video]`, `[cluster]`): the `export` extra's packages (torch above all: on Jetson it
# comes from JetPack) may be imported inside the functions that need them, never at module level of
# anything the runtime-only command paths import.
RUNTIME_ENTRIES = ("hinet_deploy.cli", "hinet_deploy.cli.restore", "hinet_deploy.restore",
                   "hinet_deploy.runtime")
EXPORT_ONLY = {"torch", "onnx", "onnx_graphsurgeon", "skimage", "matplotlib"}


def _module_level_imports(path: Path) -> list[tuple[int, str]]:
    """Imports run when the module is imported: not those inside functions (or classes' methods)."""
    found = []

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)  # annotations only: never imported at run time
                continue
            if isinstance(node, ast.Import):
                found.extend((node.lineno, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.lineno, node.module))
                found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []) or [])

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


def _export_only_reached(entries, modules: dict[str, Path]) -> list[str]:
    """Each export-only package that importing `entries` imports, with the chain that gets there."""
    chains = {m: [m] for e in entries for m in modules if m == e or m.startswith(e + ".")}
    todo, bad = list(chains), []
    while todo:
        name = todo.pop()
        for line, target in _module_level_imports(modules[name]):
            if target.split(".")[0] in EXPORT_ONLY:
                bad.append(" -> ".join(chains[name]) + f":{line} imports {target}")
            parents = [target.rsplit(".", k)[0] for k in range(target.count(".") + 1)]
            for hop in (p for p in parents if p in modules and p not in chains):
                chains[hop] = [*chains[name], hop]
                todo.append(hop)
    return sorted(bad)


def test_runtime_command_paths_import_no_export_package_at_module_level():
    assert _export_only_reached(RUNTIME_ENTRIES, _project_modules()) == []


def test_the_runtime_rule_catches_torch_two_hops_away(tmp_path):
    (tmp_path / "entry.py").write_text("import os\nfrom pkg import helper\ndef f():\n"
                                       "    import torch\n")
    (tmp_path / "helper.py").write_text("if TYPE_CHECKING:\n    import onnx\nif True:\n"
                                        "    from torch import nn\n")
    modules = {"pkg.entry": tmp_path / "entry.py", "pkg.helper": tmp_path / "helper.py"}
    assert _export_only_reached(["pkg.entry"], modules) == [
        "pkg.entry -> pkg.helper:4 imports torch", "pkg.entry -> pkg.helper:4 imports torch.nn"]


# Backends as data: the checks reach backends only through the table (BACKENDS and its helpers),
# never a backend's class or module; and no backend overrides the template's run, run_device or
# close (BackendBase checks input, output and the closed state there, once for all).
TABLE_NAMES = {"BACKENDS", "Backend", "BackendBase", "ModelFiles", "backend_class", "open_backend"}
TEMPLATE = {"run", "run_device", "close"}


def _backend_imports(folder: Path) -> list[str]:
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("hinet_deploy.runtime.backends."):
                    bad.append(f"{path.name}:{node.lineno} imports {node.module}")
                elif node.module == "hinet_deploy.runtime.backends":
                    bad += [f"{path.name}:{node.lineno} takes {a.name}" for a in node.names
                            if a.name not in TABLE_NAMES]
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                        if a.name.startswith("hinet_deploy.runtime.backends.")]
    return bad


def test_no_check_imports_a_backend_class_or_module():
    assert _backend_imports(REPO / "hinet_deploy" / "checks") == []


def test_the_backend_import_rule_catches_one(tmp_path):
    (tmp_path / "bad.py").write_text(
        "from hinet_deploy.runtime.backends import BACKENDS, TorchBackend\n"
        "def f():\n    from hinet_deploy.runtime.backends.openvino import native_precisions\n")
    assert _backend_imports(tmp_path) == [
        "bad.py:1 takes TorchBackend", "bad.py:3 imports hinet_deploy.runtime.backends.openvino"]


def _template_overrides(folder: Path) -> list[str]:
    """Methods of the template defined by a class that derives from BackendBase, directly or
    through another backend (OnnxRuntimeGpuBackend through OnnxRuntimeBackend)."""
    classes = [(path, node) for path in sorted(folder.glob("*.py"))
               for node in ast.walk(ast.parse(path.read_text(), str(path)))
               if isinstance(node, ast.ClassDef)]
    backends, grew = {"BackendBase"}, True
    while grew:
        before = len(backends)
        backends |= {node.name for _, node in classes
                     if any(ast.unparse(b).split(".")[-1] in backends for b in node.bases)}
        grew = len(backends) > before
    return [f"{path.name}: {node.name}.{f.name}" for path, node in classes
            if node.name in backends - {"BackendBase"} for f in node.body
            if isinstance(f, ast.FunctionDef) and f.name in TEMPLATE]


def test_no_backend_defines_the_templates_methods():
    assert _template_overrides(REPO / "runtime" / "backends") == []


def test_the_template_rule_catches_one(tmp_path):
    (tmp_path / "mine.py").write_text(
        "class Mine(BackendBase):\n    def run_impl(self, b):\n        return b\n"
        "    def run(self, b):\n        return b\n"
        "class Other:\n    def run(self, b):\n        return b\n"
        "class Deeper(Mine):\n    def close(self):\n        pass\n")
    assert _template_overrides(tmp_path) == ["mine.py: Mine.run", "mine.py: Deeper.close"]
