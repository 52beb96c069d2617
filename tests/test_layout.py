"""The layering of docs/architecture.md, read from the imports: the engine is pure and imports
neither the QC nor the phantom; the QC imports only numpy and the engine's types; each stage of
the engine imports only the stages before it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ctp_node"

#: What each part may import besides the standard library (top-level names, or ``ctp_node.x``).
ALLOWED = {
    "perfusion": {"numpy", "scipy", "ctp_node.perfusion"},
    "qc": {"numpy", "ctp_node.perfusion", "ctp_node.qc"},
    "phantom/anatomy.py": {"numpy"},
    "phantom/generator.py": {"numpy", "scipy", "ctp_node.perfusion", "ctp_node.phantom.anatomy"},
    "phantom/leakage.py": {"numpy", "ctp_node.perfusion", "ctp_node.phantom"},
    "phantom/vasospasm.py": {"numpy", "ctp_node.perfusion", "ctp_node.phantom"},
    # not a stage: the engine calls it after its stages
    "perfusion/asymmetry.py": {"numpy", "scipy", "ctp_node.perfusion.errors"},
}


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (also inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _allowed(name: str, allowed: set[str]) -> bool:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names:
        return True
    if top != "ctp_node":
        return top in allowed
    return any(name == a or name.startswith(a + ".") for a in allowed if a.startswith("ctp_node"))


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_part_imports_only_what_it_may(part: str) -> None:
    target = PACKAGE / part
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    wrong = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in files
        for name in imported(path)
        if not _allowed(name, ALLOWED[part])
    }
    assert not wrong, sorted(wrong)


#: The engine's stage sub-packages in the order the engine runs them (``permeability`` only
#: with the tumour profile).
STAGES = ("prepare", "tissue", "inputs", "permeability", "residues", "maps", "lesions")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_imports_only_earlier_stages(stage: str) -> None:
    later = {f"ctp_node.perfusion.{s}" for s in STAGES[STAGES.index(stage) + 1 :]}
    top = {"ctp_node.perfusion.engine", "ctp_node.perfusion.resolution"}
    files = sorted((PACKAGE / "perfusion" / stage).glob("*.py"))
    assert len(files) >= 2  # the package and its stage
    wrong = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in files
        for name in imported(path)
        if any(name == x or name.startswith(x + ".") for x in later | top)
    }
    assert not wrong, sorted(wrong)


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from ctp_node.qc import limits\n")
    names = imported(module)
    assert not all(_allowed(n, ALLOWED["perfusion"]) for n in names)
    assert all(_allowed(n, ALLOWED["qc"]) for n in names)


#: The longest a function in ctp_node/ may be, lines with its docstring.
MAX_FUNCTION_LINES = 80
#: Every sub-package and top-level module of ctp_node/.
PARTS = sorted(
    p.name
    for p in PACKAGE.iterdir()
    if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"
)


@pytest.mark.parametrize("part", PARTS)
def test_functions_are_short(part: str) -> None:
    target = PACKAGE / part
    long = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
        for path in (sorted(target.rglob("*.py")) if target.is_dir() else [target])
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long
