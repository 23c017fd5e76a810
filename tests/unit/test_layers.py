"""The package's floors: each stage imports only the stages below it (CONTRIBUTING.md, "Where a
change goes"). A new import that goes upward fails here, with the line that does it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest_tokenbudget

PACKAGE = Path(pytest_tokenbudget.__file__).parent
FLOORS = (
    "units model config request_body",  # the shared vocabulary at the bottom
    "providers",  # one home per API family: routes, usage, stream framing
    "tokens",  # tiktoken, counting, estimates
    "pricing",  # genai-prices and overrides, context windows
    "ledger",  # attribution and tallies
    "capture",  # the HTTP stacks' wrappers, the recorder
    "judge",  # budgets, the gate, the hard cap
    "inspection",  # request anatomy, stale cassettes, context-window findings
    "runs",  # the artifact, baselines, history, merging
    "report",  # every rendering: terminal, markdown, junit, export, github
    "check cli hookspecs plugin __init__",  # what speaks to people and to pytest
)
FLOOR = {stage: number for number, stages in enumerate(FLOORS) for stage in stages.split()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(source: str, package: list[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for every import of the package in ``source``, a module of ``package``
    (in functions and under TYPE_CHECKING too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "pytest_tokenbudget":  # from . import units
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            elif module.startswith("pytest_tokenbudget."):
                found.append((node.lineno, module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("pytest_tokenbudget.")]
    return found


def test_every_stage_has_a_floor() -> None:
    stages = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    stages.discard("__pycache__")
    assert stages <= set(FLOOR), f"give these a floor in FLOORS (and CONTRIBUTING.md): {stages - set(FLOOR)}"


def test_no_stage_imports_a_stage_above_it() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mine = _stage(module.removesuffix(".__init__"))
        package = list(path.relative_to(PACKAGE.parent).parts[:-1])
        for line, imported in _imports(path.read_text(encoding="utf-8"), package):
            theirs = _stage(imported)
            if theirs != mine and FLOOR.get(theirs, -1) > FLOOR[mine]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {mine} imports {imported}")
    assert not upward, "\n".join(upward)


def test_the_check_sees_upward_imports() -> None:
    """The checker itself: relative, absolute and in-function imports are all seen."""
    source = "\n".join(
        [
            "from ..report import terminal",
            "from .. import runs",
            "def f():",
            "    import pytest_tokenbudget.judge.gate",
        ]
    )
    found = _imports(source, ["pytest_tokenbudget", "providers"])
    assert found == [
        (1, "pytest_tokenbudget.report"),
        (2, "pytest_tokenbudget.runs"),
        (4, "pytest_tokenbudget.judge.gate"),
    ]
