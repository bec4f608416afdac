"""Imports run downward only: each folder of ragqa may import the layers below it, never one
above (lazy imports inside functions included). A newcomer can tell from the folder where a
change goes; this test keeps it so (docs/development.md has the map)."""

import ast
from pathlib import Path

from conftest import ROOT

# lowest first; a package may import itself and any layer before it
LAYERS = [
    {"ragqa.config", "ragqa.errors", "ragqa.files", "ragqa.memory", "ragqa.resources"},  # may use each other
    {"ragqa.indexing"},
    {"ragqa.generators"},
    {"ragqa.testing"},  # the fakes: a generator without a model
    {"ragqa.answering"},
    {"ragqa.training", "ragqa.evaluation", "ragqa.integrations"},
    {"ragqa.benchmarks"},
    {"ragqa.apps"},
]
# peers in one layer that one of them uses (never the other way round)
PEER_USES = {("ragqa.training", "ragqa.evaluation")}  # validation scores with evaluation's F1


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit}: in no layer; add it to LAYERS in {__file__}")


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ragqa"):
            if node.module == "ragqa":
                for alias in node.names:
                    yield f"ragqa.{alias.name}", node.lineno
            else:
                yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ragqa."):
                    yield alias.name, node.lineno


def test_imports_only_run_downward():
    wrong = []
    for path in sorted((ROOT / "ragqa").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts)
        if module in ("ragqa.__init__", "ragqa.__main__"):
            continue  # the facade re-exports from every layer (lazily)
        unit = _unit(module.removesuffix(".__init__"))
        for target, line in _imports(path):
            other = _unit(target)
            if other in ("ragqa", unit):
                continue
            same = _layer(other) == _layer(unit) and _layer(unit) > 0
            if _layer(other) > _layer(unit) or (same and (unit, other) not in PEER_USES):
                wrong.append(f"{rel}.py:{line}: {unit} imports {target}")
    assert not wrong, "\n".join(wrong)
