"""Imports point one way: models <- experiments <- platform; analysis imports none of them.

The checker parses every module of the package with :mod:`ast` (nothing is
imported, so a wrong-way edge cannot hide behind an import error) and
collects every edge a module can take at run time:

- ``import a.b`` and ``from a.b import c`` at any depth (module level, inside
  functions, under ``if TYPE_CHECKING:``);
- relative imports (``from ..experiments import x``), resolved against the
  module's own package;
- ``importlib.import_module("a.b")`` / ``import_module(".b", package="a")``
  and ``__import__("a.b")`` with a string argument, or the constant prefix of
  an f-string / ``"a." + name`` (enough to know which layer it reaches).

Layers, lowest first: ``models`` (nn.Modules, pure tensor functions),
``experiments`` (one process, no Ray), ``platform`` (Ray, MLflow, CLI). A
module may import its own layer and the layers below it. ``analysis`` reads
records only: it imports no other layer and none of the compute stack
(``FORBIDDEN_IN_ANALYSIS``); only ``platform`` (the CLI) may import it. The
root ``__init__.py`` imports no sub-package, so ``import erasablemask.models``
never loads the rest.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "erasablemask"
ROOT = Path(__file__).resolve().parents[1]  # the repository root is the package
RANK = {"models": 0, "experiments": 1, "platform": 2}
# What analysis must not import: the layers below it and the compute stack
# (it reads parquet records and MLflow summaries: pandas, pyarrow, matplotlib).
FORBIDDEN_IN_ANALYSIS = ("torch", "torchvision", "ray", "kornia", "lpips", "onnx", "onnx2torch", "onnxruntime")

# Known wrong-way edges being removed, each naming the issue item that removes it:
# (importing file relative to the package root, imported module). Empty when none.
KNOWN_EDGES: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Edge:
    """One import found in ``file`` at ``line``: ``importer`` -> ``imported`` (absolute dotted names)."""

    file: str
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} -> {self.imported}"


def module_name(path: Path, root: Path, package: str = PACKAGE) -> str:
    """``models/fr/registry.py`` -> ``erasablemask.models.fr.registry`` (``__init__`` names its package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _resolve_relative(importer: str, is_package: bool, level: int, name: str | None) -> str:
    """Absolute name of ``from <level dots><name> import ...`` written in module ``importer``."""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, name] if name else base)


def _constant_prefix(node: ast.expr) -> str | None:
    """The string a call argument starts with: a constant, an f-string's leading text, or ``"a." + x``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _constant_prefix(node.left)
    return None


def _dynamic_import(call: ast.Call) -> tuple[str, str | None] | None:
    """``(name, package)`` of an ``importlib.import_module``/``__import__`` call with a string argument."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if called not in ("import_module", "__import__") or not call.args:
        return None
    name = _constant_prefix(call.args[0])
    if name is None:
        return None
    package = next((_constant_prefix(k.value) for k in call.keywords if k.arg == "package"), None)
    if package is None and called == "import_module" and len(call.args) > 1:
        package = _constant_prefix(call.args[1])
    return name, package


def imports_of(path: Path, root: Path, package: str = PACKAGE) -> list[Edge]:
    """Every import edge of one module (see the module docstring for what counts)."""
    importer = module_name(path, root, package)
    is_package = path.name == "__init__.py"
    rel = path.relative_to(root).as_posix()
    edges: list[Edge] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            edges += [Edge(rel, node.lineno, importer, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(importer, is_package, node.level, node.module) if node.level else node.module or ""
            )
            # `from erasablemask import experiments` reaches erasablemask.experiments.
            targets = [f"{base}.{a.name}" for a in node.names] if base == package else [base]
            edges += [Edge(rel, node.lineno, importer, t) for t in targets]
        elif isinstance(node, ast.Call) and (found := _dynamic_import(node)) is not None:
            name, pkg = found
            if name.startswith(".") and pkg:
                level = len(name) - len(name.lstrip("."))
                name = _resolve_relative(pkg, True, level, name.lstrip(".") or None)
            edges.append(Edge(rel, node.lineno, importer, name))
    return edges


def _layer(name: str, package: str) -> str | None:
    """``erasablemask.experiments.x`` -> ``experiments``; ``erasablemask`` -> ``""``; other packages -> None."""
    parts = name.split(".")
    if parts[0] != package:
        return None
    return parts[1] if len(parts) > 1 else ""


def wrong_way(edge: Edge, package: str = PACKAGE) -> str | None:
    """Why ``edge`` points the wrong way, or None when it is allowed."""
    src, dst = _layer(edge.importer, package), _layer(edge.imported, package)
    if src == "" and dst:
        return "the root __init__ imports no sub-package"
    if src == "analysis":
        if dst and dst != "analysis":
            return "analysis reads records and imports no other layer"
        top = edge.imported.split(".")[0]
        if dst is None and top in FORBIDDEN_IN_ANALYSIS:
            return f"analysis reads records; it does not import the compute stack ({top})"
        return None
    if dst == "analysis" and src != "platform":
        return "only platform (the CLI) may import analysis"
    if src in RANK and dst in RANK and RANK[dst] > RANK[src]:
        return f"{src} may import only {' and '.join(k for k, r in RANK.items() if r <= RANK[src])}"
    return None


def package_modules(root: Path) -> list[Path]:
    """The package's modules: the root ``__init__.py`` and every ``.py`` under the four layers."""
    files = [root / "__init__.py"] if (root / "__init__.py").is_file() else []
    for layer in (*RANK, "analysis"):
        files += sorted((root / layer).rglob("*.py")) if (root / layer).is_dir() else []
    return files


def find_wrong_way_imports(root: Path, package: str = PACKAGE) -> list[tuple[Edge, str]]:
    """Every wrong-way edge in the package rooted at ``root``, with the rule it breaks."""
    found = []
    for path in package_modules(root):
        for edge in imports_of(path, root, package):
            if (why := wrong_way(edge, package)) is not None:
                found.append((edge, why))
    return found


# ---------------------------------------------------------------- the package itself


def test_imports_of_the_package_point_one_way() -> None:
    found = find_wrong_way_imports(ROOT)
    unexpected = [f"{e}  ({why})" for e, why in found if (e.file, e.imported) not in KNOWN_EDGES]
    assert not unexpected, "wrong-way imports (move the code to the lower layer or pass it in):\n" + "\n".join(
        unexpected
    )
    stale = KNOWN_EDGES - {(e.file, e.imported) for e, _ in found}
    assert not stale, f"KNOWN_EDGES lists edges that are gone; delete these entries: {sorted(stale)}"


def test_the_checker_sees_the_whole_package() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in package_modules(ROOT)}
    assert {"__init__.py", "models/attgan.py", "experiments/config/schema.py", "platform/cli/main.py",
            "analysis/__init__.py"} <= files
    # platform/cli/main.py loads its command groups by f-string: the checker reads the prefix.
    edges = imports_of(ROOT / "platform/cli/main.py", ROOT)
    assert any(e.imported == "erasablemask.platform.cli." for e in edges)


# ---------------------------------------------------------------- the checker can fail


def _plant(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_names_file_line_and_edge_of_every_planted_wrong_way_import(tmp_path: Path) -> None:
    _plant(tmp_path, {
        "__init__.py": '"""root"""\n',
        "models/__init__.py": "",
        "models/fr/__init__.py": "from . import zoo\n",
        "models/fr/zoo.py": (
            "import importlib\n"
            "import torch\n"
            "from ..net import Net\n"  # fine: models -> models
            "def build():\n"
            "    from ...experiments.data import world\n"  # relative, inside a function
            "    return importlib.import_module('erasablemask.experiments.fr_tools.mini')\n"
        ),
        "models/net.py": "x = __import__('erasablemask.platform.tracking')\n",
        "experiments/__init__.py": "",
        "experiments/run.py": (
            "from erasablemask.models.net import Net\n"  # fine: experiments -> models
            "from erasablemask import platform\n"
        ),
        "platform/cli.py": (
            "import importlib\n"
            "from erasablemask.experiments.run import Net\n"  # fine
            "from erasablemask.analysis import tables\n"  # fine: the CLI may call analysis
            "def load(g):\n"
            "    return importlib.import_module(f'erasablemask.platform.{g}')\n"  # fine
        ),
        "analysis/__init__.py": "",
        "analysis/tables.py": (
            "import pandas as pd\n"
            "import torch.nn\n"
            "from erasablemask.models import attgan\n"
            "from ray import tune\n"
        ),
    })
    found = {str(e): why for e, why in find_wrong_way_imports(tmp_path)}
    assert found == {
        "models/fr/zoo.py:5: erasablemask.models.fr.zoo -> erasablemask.experiments.data":
            "models may import only models",
        "models/fr/zoo.py:6: erasablemask.models.fr.zoo -> erasablemask.experiments.fr_tools.mini":
            "models may import only models",
        "models/net.py:1: erasablemask.models.net -> erasablemask.platform.tracking": "models may import only models",
        "experiments/run.py:2: erasablemask.experiments.run -> erasablemask.platform":
            "experiments may import only models and experiments",
        "analysis/tables.py:2: erasablemask.analysis.tables -> torch.nn":
            "analysis reads records; it does not import the compute stack (torch)",
        "analysis/tables.py:3: erasablemask.analysis.tables -> erasablemask.models":
            "analysis reads records and imports no other layer",
        "analysis/tables.py:4: erasablemask.analysis.tables -> ray":
            "analysis reads records; it does not import the compute stack (ray)",
    }


@pytest.mark.parametrize(
    ("importer_file", "source", "imported"),
    [
        ("models/a.py", "from .b import c", "erasablemask.models.b"),
        ("models/fr/__init__.py", "from . import registry", "erasablemask.models.fr"),
        ("models/fr/x.py", "from .. import attgan", "erasablemask.models"),
        ("models/fr/x.py", "import importlib\nimportlib.import_module('.y', package='erasablemask.experiments')",
         "erasablemask.experiments.y"),
        ("platform/cli/m.py", "import importlib\nimportlib.import_module('erasablemask.' + 'x')", "erasablemask."),
    ],
)
def test_relative_and_dynamic_imports_resolve_to_absolute_names(
    tmp_path: Path, importer_file: str, source: str, imported: str
) -> None:
    _plant(tmp_path, {importer_file: source + "\n"})
    assert imported in [e.imported for e in imports_of(tmp_path / importer_file, tmp_path)]


def test_root_init_importing_a_layer_is_refused(tmp_path: Path) -> None:
    _plant(tmp_path, {"__init__.py": "from erasablemask.models import attgan\n"})
    ((edge, why),) = find_wrong_way_imports(tmp_path)
    assert str(edge) == "__init__.py:1: erasablemask -> erasablemask.models" and "root __init__" in why
