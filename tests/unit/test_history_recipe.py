"""The CI history recipe: main keeps its last runs in the Actions cache, pull requests only read it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_workflows import EXAMPLES, PR, load, steps, triggers, uses_of

HISTORY = EXAMPLES / "tokenbudget-history.yml"


def test_only_main_saves_the_history_and_prs_only_restore_it() -> None:
    workflow = load(HISTORY)
    assert set(triggers(workflow)) == {"push", "workflow_dispatch"}
    assert triggers(workflow)["push"] == {"branches": ["main"]}
    assert workflow["permissions"] == {"contents": "read"}
    restore = uses_of(workflow, "actions/cache/restore")
    save = uses_of(workflow, "actions/cache/save")
    assert [s["with"]["path"] for s in restore + save] == [".tokenbudget/runs"] * 2
    assert restore[0]["with"]["restore-keys"] == "tokenbudget-history-"
    assert save[0]["with"]["key"].startswith("tokenbudget-history-")
    pr = load(PR)
    assert uses_of(pr, "actions/cache/save") == []  # a pull request never writes the history
    assert uses_of(pr, "actions/cache") == []
    (pr_restore,) = uses_of(pr, "actions/cache/restore")
    assert pr_restore["with"]["restore-keys"] == "tokenbudget-history-"
    names = [s.get("name") for s in steps(pr)]
    assert names.index("restore the run history") < names.index("pytest")  # the report draws it


@pytest.mark.slow
def test_the_prune_step_keeps_the_newest_runs(tmp_path: Path) -> None:
    (script,) = [s["run"] for s in steps(load(HISTORY)) if s.get("name") == "keep the newest runs"]
    runs = tmp_path / ".tokenbudget" / "runs"
    runs.mkdir(parents=True)
    names = [f"2026-11-{day:02d}T06-30-12.481Z_main_1a2b3c4d.json" for day in range(1, 13)]
    for name in names:
        (runs / name).write_text("{}")
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env={"HISTORY_RUNS": "5", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert sorted(p.name for p in runs.iterdir()) == names[-5:]
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env={"HISTORY_RUNS": "30", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert len(list(runs.iterdir())) == 5  # fewer than kept: nothing removed
