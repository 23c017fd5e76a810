"""The GitHub Actions workflows: the project's CI and the recipes users copy.

Each file is valid YAML and a valid workflow (the schema vendored in check-jsonschema, offline),
uses only options and subcommands the plugin really has, and keeps the fork-safety design: the
untrusted pull_request runs (single job and sharded) have a read-only token, no secrets and no
``${{ }}`` in their scripts, and only upload the report; the trusted workflow_run that posts the
comment never checks out or runs the pull request's code. Every action is pinned to a commit and
no checkout leaves its token in .git/config (zizmor's audits: .ci/check-workflows).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_tokenbudget.cli import build_parser
from pytest_tokenbudget.report.markdown import MARKER

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
EXAMPLES = WORKFLOWS / "examples"
FILES = sorted([*WORKFLOWS.rglob("*.yml"), *WORKFLOWS.rglob("*.yaml")])

PR = EXAMPLES / "tokenbudget-pr.yml"
COMMENT = EXAMPLES / "tokenbudget-comment.yml"
BASELINE = EXAMPLES / "tokenbudget-baseline.yml"
SHARDED = EXAMPLES / "tokenbudget-sharded.yml"
CI = WORKFLOWS / "ci.yml"
OURS = [CI, *sorted(EXAMPLES.glob("*.yml"))]  # release.yml has tests of its own

OPTION = re.compile(r"--token-budget(?:-[a-z]+)*")
HELP_OPTION = re.compile(r"^\s+(--token-budget(?:-[a-z]+)*)", re.MULTILINE)
# `tokenbudget SUB` where a command starts (not pytest-tokenbudget, tokenbudget.md, a commit message …)
SUBCOMMAND = re.compile(r"(?:^|[;&|(])[ \t]*tokenbudget[ \t]+([a-z][a-z-]*)([^\n]*)", re.MULTILINE)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a YAML mapping"
    return data


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The ``on:`` block (YAML 1.1 reads the bare key ``on`` as True)."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict)
    return on


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def runs(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(workflow) if "run" in step]


def uses(workflow: dict[str, Any]) -> list[str]:
    return [step["uses"] for step in steps(workflow) if "uses" in step]


def uses_of(workflow: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The steps that use ``action`` (``actions/checkout`` …), at whatever ref."""
    return [s for s in steps(workflow) if s.get("uses", "").partition("@")[0] == action]


def subcommand_help(name: str, capsys: pytest.CaptureFixture[str]) -> str | None:
    """The ``--help`` text of ``tokenbudget NAME``; None when there is no such subcommand."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([name, "--help"])
    out, _ = capsys.readouterr()
    return out if exit_info.value.code == 0 else None


def test_the_workflows_exist() -> None:
    names = {path.relative_to(WORKFLOWS).as_posix() for path in FILES}
    assert {
        "ci.yml",
        "examples/tokenbudget-pr.yml",
        "examples/tokenbudget-comment.yml",
        "examples/tokenbudget-baseline.yml",
        "examples/tokenbudget-sharded.yml",
    } <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(WORKFLOWS).as_posix())
def test_workflow_is_valid(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("name"), f"{path}: no name"
    assert triggers(workflow)
    assert workflow["jobs"]
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflows_use_only_real_plugin_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    known = set(HELP_OPTION.findall(result.stdout.str()))
    assert {"--token-budget", "--token-budget-baseline", "--token-budget-markdown"} <= known
    used = {(path.name, option) for path in FILES for option in OPTION.findall(path.read_text("utf-8"))}
    assert used, "no workflow uses the plugin"
    unknown = sorted((name, option) for name, option in used if option not in known)
    assert not unknown, f"options pytest --help does not list: {unknown}"


def test_workflows_use_only_real_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    used = [
        (path.name, match.group(1), match.group(2))
        for path in FILES
        for script in runs(load(path))
        for match in SUBCOMMAND.finditer(script)
    ]
    assert {name for _, name, _ in used} >= {"merge", "check"}  # the sharded recipe
    for file, name, rest in used:
        text = subcommand_help(name, capsys)
        assert text is not None, f"{file}: tokenbudget has no subcommand {name!r}"
        for flag in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", rest):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{file}: `tokenbudget {name}` has no option {flag}"
            )


def test_subcommand_check_rejects_an_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert subcommand_help("compare", capsys) is not None
    assert subcommand_help("no-such-command", capsys) is None


USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", re.MULTILINE)
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(WORKFLOWS).as_posix())
def test_every_action_is_pinned_to_a_commit_with_its_release_named(path: Path) -> None:
    """A tag can be moved to other code; a commit cannot. The comment says which release it is
    (what Dependabot and a reviewer read)."""
    found = USES_LINE.findall(path.read_text("utf-8"))
    assert len(found) == len(uses(load(path)))
    for ref, rest in found:
        assert PINNED.match(ref), f"{path.name}: {ref} is not pinned to a full commit SHA"
        assert re.match(r"\s+#\s*v\d+(?:\.\d+){0,2}\b", rest), f"{path.name}: {ref} names no release"


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.relative_to(WORKFLOWS).as_posix())
def test_no_checkout_keeps_its_token(path: Path) -> None:
    """persist-credentials: false everywhere: the test suite (and whatever it installs) never finds
    a token in .git/config; the baseline recipe hands one to its single `git push`."""
    checkouts = uses_of(load(path), "actions/checkout")
    for checkout in checkouts:
        assert checkout.get("with", {}).get("persist-credentials") is False, path.name


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.relative_to(WORKFLOWS).as_posix())
def test_no_expression_is_pasted_into_a_script(path: Path) -> None:
    """Values reach scripts through env: (a branch name, a matrix value), never as ${{ }} in run:."""
    for script in runs(load(path)):
        assert "${{" not in script, f"{path.name}: {script}"


class TestPullRequestRecipe:
    def test_runs_untrusted_with_a_read_only_token(self) -> None:
        workflow = load(PR)
        assert set(triggers(workflow)) == {"pull_request"}
        assert workflow["permissions"] == {"contents": "read"}
        for job in workflow["jobs"].values():
            assert job.get("permissions", {"contents": "read"}) == {"contents": "read"}
        assert "secrets." not in PR.read_text("utf-8")

    def test_no_expression_is_interpolated_into_a_script(self) -> None:
        for script in runs(load(PR)):
            assert "${{" not in script, script

    def test_fetches_history_for_the_git_baseline(self) -> None:
        workflow = load(PR)
        checkout = uses_of(workflow, "actions/checkout")
        assert len(checkout) == 1
        assert checkout[0]["with"]["fetch-depth"] == 0
        assert checkout[0]["with"]["persist-credentials"] is False
        pytest_run = next(script for script in runs(workflow) if "--token-budget" in script)
        assert "--token-budget-baseline=git:origin/${BASE_REF}:tokenbudget.baseline.json" in pytest_run
        assert "--token-budget-markdown=tokenbudget.md" in pytest_run
        assert "--token-budget-json=tokenbudget.json" in pytest_run

    def test_uploads_the_report_even_when_pytest_fails(self) -> None:
        workflow = load(PR)
        upload = uses_of(workflow, "actions/upload-artifact")
        assert [u["with"]["name"] for u in upload] == ["tokenbudget-pr", "tokenbudget-report"]
        assert upload[0]["if"] == "always()"
        paths = upload[0]["with"]["path"].split()
        assert set(paths) == {"tokenbudget.md", "tokenbudget.json", "pr-number.txt"}
        number = next(s for s in steps(workflow) if "pr-number.txt" in s.get("run", ""))
        assert number["if"] == "always()"
        assert number["env"]["PR_NUMBER"] == "${{ github.event.number }}"

    def test_uploads_the_html_report_as_its_own_artifact(self) -> None:
        workflow = load(PR)
        pytest_run = next(script for script in runs(workflow) if "--token-budget" in script)
        assert "--token-budget-html=tokenbudget.html" in pytest_run
        html = uses_of(workflow, "actions/upload-artifact")[1]
        assert html["if"] == "always()"
        assert html["with"]["path"] == "tokenbudget.html"

    def test_the_pr_comment_links_the_run_that_holds_the_html_report(self) -> None:
        """The markdown's "HTML report" link goes to this run's page (its artifacts list the
        report); the URL is built from the run's own context, never from the PR's text."""
        (pytest_step,) = [s for s in steps(load(PR)) if "--token-budget" in s.get("run", "")]
        assert pytest_step["env"]["TOKENBUDGET_HTML_URL"] == (
            "${{ github.server_url }}/${{ github.repository }}/actions/runs/${{ github.run_id }}"
        )

    @pytest.mark.slow
    def test_a_missing_base_branch_baseline_is_a_note(self, pytester: pytest.Pytester) -> None:
        """First adoption: the base branch has no tokenbudget.baseline.json yet, the run passes."""
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
        pytester.makepyfile(test_one="def test_one():\n    pass\n")
        for command in (
            ["git", "init", "-q", "-b", "main"],
            ["git", "add", "-A"],
            [*git, "commit", "-q", "-m", "init"],
        ):
            subprocess.run(command, cwd=pytester.path, check=True, capture_output=True)
        result = pytester.runpytest(
            "--token-budget",
            "--token-budget-baseline=git:main:tokenbudget.baseline.json",
            "--token-budget-markdown=tokenbudget.md",
        )
        assert result.ret == 0
        result.stdout.fnmatch_lines(["*no baseline found at main:tokenbudget.baseline.json: nothing*"])
        assert (pytester.path / "tokenbudget.md").read_text("utf-8").startswith(MARKER)


class TestCommentRecipe:
    def test_is_triggered_by_the_pr_workflow(self) -> None:
        workflow = load(COMMENT)
        on = triggers(workflow)
        assert set(on) == {"workflow_run"}
        assert on["workflow_run"]["workflows"] == [load(PR)["name"], load(SHARDED)["name"]]
        assert on["workflow_run"]["types"] == ["completed"]
        assert workflow["permissions"] == {}
        assert workflow["jobs"]["comment"]["permissions"] == {"pull-requests": "write", "actions": "read"}

    def test_never_checks_out_or_runs_the_pull_request(self) -> None:
        workflow = load(COMMENT)
        assert not uses_of(workflow, "actions/checkout")
        for script in runs(workflow):
            assert "${{" not in script, script
            for word in ("pip ", "pytest", "git ", "python", "bash ", "source ", "make "):
                assert word not in script, script

    def test_downloads_the_artifact_of_the_triggering_run(self) -> None:
        workflow = load(COMMENT)
        download = uses_of(workflow, "actions/download-artifact")
        assert len(download) == 1
        options = download[0]["with"]
        assert options["run-id"] == "${{ github.event.workflow_run.id }}"
        assert options["github-token"]
        upload = uses_of(load(PR), "actions/upload-artifact")[0]
        assert options["name"] == upload["with"]["name"]

    def test_validates_the_pr_number(self) -> None:
        script = next(s for s in runs(load(COMMENT)) if "pr-number.txt" in s)
        assert "^[0-9]" in script
        assert "exit 1" in script

    def test_updates_the_comment_with_the_reports_marker(self) -> None:
        workflow = load(COMMENT)
        script_steps = uses_of(workflow, "actions/github-script")
        assert len(script_steps) == 1
        script = script_steps[0]["with"]["script"]
        assert MARKER == "<!-- pytest-tokenbudget -->"
        assert f"'{MARKER}'" in script
        assert "updateComment" in script
        assert "createComment" in script
        # whoever posted it (an App, a PAT): found by a body that starts with the marker
        assert ".startsWith(MARKER)" in script
        assert "github-actions[bot]" not in script
        assert ".includes(MARKER)" not in script


class TestShardedRecipe:
    """The same split as the single-job recipe: the shards and the merge only upload."""

    def test_no_job_may_write(self) -> None:
        workflow = load(SHARDED)
        assert workflow["permissions"] == {"contents": "read"}
        for job in workflow["jobs"].values():
            assert job.get("permissions", {"contents": "read"}) == {"contents": "read"}
        assert "secrets." not in SHARDED.read_text("utf-8")
        assert not [u for u in uses(workflow) if "comment" in u]  # no commenting action

    def test_uploads_the_report_for_the_comment_workflow(self) -> None:
        merge = load(SHARDED)["jobs"]["token-budget"]
        uploads = [s for s in merge["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
        assert len(uploads) == 1
        upload = uploads[0]
        assert upload["if"] == "${{ !cancelled() }}"  # after an exceeded budget too
        download = uses_of(load(COMMENT), "actions/download-artifact")[0]
        assert upload["with"]["name"] == download["with"]["name"]
        assert {"tokenbudget.md", "pr-number.txt"} <= set(upload["with"]["path"].split())
        number = next(s for s in merge["steps"] if "pr-number.txt" in s.get("run", ""))
        assert number["env"]["PR_NUMBER"] == "${{ github.event.number }}"
        assert "!cancelled()" in number["if"]

    def test_the_merge_reads_only_the_shards(self) -> None:
        """A re-run attempt sees the first attempt's artifacts: the pattern must not match the
        report artifact, or it would be merged as a shard."""
        workflow = load(SHARDED)
        shard_upload = uses_of(workflow, "actions/upload-artifact")[0]
        pattern = uses_of(workflow, "actions/download-artifact")[0]["with"]["pattern"]
        assert shard_upload["with"]["name"] == "tokenbudget-shard-${{ matrix.group }}"
        assert pattern == "tokenbudget-shard-*"
        assert not re.fullmatch(pattern.replace("*", ".*"), "tokenbudget-pr")

    def test_compares_with_the_base_branch_through_env(self) -> None:
        check = next(s for s in steps(load(SHARDED)) if s.get("id") == "check")
        assert check["env"]["BASE_REF"] == "${{ github.base_ref || 'main' }}"
        assert '"git:origin/${BASE_REF}"' in check["run"]


def test_baseline_recipe_commits_only_a_changed_baseline() -> None:
    workflow = load(BASELINE)
    assert triggers(workflow)["push"] == {"branches": ["main"]}
    assert workflow["permissions"] == {}
    assert workflow["jobs"]["baseline"]["permissions"] == {"contents": "write"}
    scripts = "\n".join(runs(workflow))
    assert "--token-budget-save-baseline" in scripts
    assert "--token-budget-update-baseline" in scripts  # only when growth is accepted by hand
    assert "git diff --cached --quiet" in scripts
    assert "${{" not in scripts
    # the token only for the push, through git's environment (persist-credentials: false)
    commit = next(s for s in steps(workflow) if "git push" in s.get("run", ""))
    assert commit["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}
    assert [s for s in steps(workflow) if "GITHUB_TOKEN" in s.get("env", {})] == [commit]
    assert 'GIT_CONFIG_VALUE_0="AUTHORIZATION: basic $credential"' in commit["run"]
    assert "x-access-token:" in commit["run"]
    assert "$GITHUB_TOKEN@" not in commit["run"]  # never in a URL (the command line)


def test_ci_runs_the_suite_on_every_supported_python() -> None:
    workflow = load(CI)
    on = triggers(workflow)
    assert on["push"] == {"branches": ["main"]}
    assert "pull_request" in on
    assert workflow["permissions"] == {"contents": "read"}
    tests = workflow["jobs"]["tests"]
    assert tests["strategy"]["matrix"]["python-version"] == ["3.11", "3.12", "3.13"]
    assert tests["runs-on"] == "ubuntu-latest"
    assert ".ci/run" in [step.get("run") for step in tests["steps"]]
    assert uses_of(workflow, "actions/checkout")
    assert uses_of(workflow, "actions/setup-python")
    ci_run = ROOT / ".ci" / "run"
    assert ci_run.is_file()
    assert ci_run.stat().st_mode & 0o111
