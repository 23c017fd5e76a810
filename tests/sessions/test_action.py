"""The composite GitHub Action (action.yml) and the comment logic of the recipes.

There is no local runner for composite actions, so these tests are one: they read action.yml,
check that every input reaches the steps through ``env:`` only, and execute its steps the way
GitHub does (``bash --noprofile --norc -eo pipefail``, a fresh ``$GITHUB_OUTPUT`` per step, ``${{ }}``
evaluated in ``env:``) against a small git project with a committed baseline, a job summary file
and a GitHub API emulated on 127.0.0.1. The comment's marker logic (Python in the action, JavaScript
in tokenbudget-comment.yml, run with node when it is installed) is checked on the same cases, and a
real session proves that no test id can write the marker into the report.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from pytest_tokenbudget.report.markdown import MARKER

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
SCRIPT = ROOT / "action" / "tokenbudget_action.py"
COMMENT_RECIPE = ROOT / ".github" / "workflows" / "examples" / "tokenbudget-comment.yml"
TOKEN = "ghs_faketoken0123456789"
RUN_SCRIPT = "$GITHUB_ACTION_PATH/action/tokenbudget_action.py"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load_action() -> dict[str, Any]:
    data = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def action_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tokenbudget_action", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- action.yml, read ----------------------------------------------------------------------------


@pytest.mark.slow
def test_is_a_composite_action_valid_for_github() -> None:
    action = load_action()
    assert action["runs"]["using"] == "composite"
    assert action["name"]
    assert action["description"]
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-actions", str(ACTION)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _strings(node: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*where, index))
    elif isinstance(node, str):
        yield where, node


def test_inputs_reach_the_steps_through_env_only() -> None:
    """``${{ inputs.x }}`` pasted into a script would be shell code written by whoever sets the
    input (a branch name, a PR title passed through): every input is an env: value, and no run:
    holds an expression of any kind."""
    action = load_action()
    declared = set(action["inputs"])
    used: set[str] = set()
    for where, text in _strings(action["runs"]):
        for expression in EXPRESSION.findall(text):
            names = re.findall(r"\binputs\.([\w-]+)", expression)
            if not names:
                continue
            assert where[0] == "steps", (where, text)
            assert where[2] == "env", (where, text)
            assert text == f"${{{{ inputs.{names[0]} }}}}", text  # the whole value, nothing around it
            used.update(names)
    assert used == declared, f"declared but unused: {declared - used}; undeclared: {used - declared}"
    for step in action["runs"]["steps"]:
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], step["run"]
        assert step["run"].startswith(f'"$TOKENBUDGET_PYTHON" "{RUN_SCRIPT}" ')


def test_the_token_goes_only_to_the_fetch_and_the_comment() -> None:
    steps = {step["id"]: step for step in load_action()["runs"]["steps"]}
    holders = {sid for sid, step in steps.items() if "inputs.github-token" in json.dumps(step.get("env", {}))}
    assert holders == {"baseline", "comment"}
    assert not re.search(r"github[-.]token", json.dumps(steps["pytest"]))


def test_every_step_the_yaml_names_exists_in_the_script() -> None:
    module = action_module()
    steps = load_action()["runs"]["steps"]
    assert [step["run"].rsplit(" ", 1)[1] for step in steps] == list(module.STEPS)
    assert [step["id"] for step in steps] == list(module.STEPS)
    for output in load_action()["outputs"].values():
        step_id = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.[\w-]+ \}\}", output["value"])
        assert step_id is not None, output
        assert step_id.group(1) in module.STEPS


def test_the_marker_is_the_reports() -> None:
    assert action_module().MARKER == MARKER


def test_the_script_passes_only_real_plugin_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    known = set(re.findall(r"^\s+(--token-budget(?:-[a-z]+)*)", result.stdout.str(), re.MULTILINE))
    used = set(re.findall(r"--token-budget(?:-[a-z]+)*", SCRIPT.read_text("utf-8")))
    assert used >= {"--token-budget", "--token-budget-markdown", "--token-budget-baseline"}
    assert used <= known, used - known


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("zizmor") is None, reason="zizmor is not installed")
def test_check_workflows_finds_nothing() -> None:
    script = ROOT / ".ci" / "check-workflows"
    assert script.stat().st_mode & 0o111
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- a fake GitHub API ---------------------------------------------------------------------------


@dataclass
class FakeGitHub:
    """Issue comments of owner/repo on 127.0.0.1: list (paginated, with a Link header), update,
    create. ``identity`` is who the token posts as; ``refuse`` maps a method to an HTTP status."""

    identity: str = "tokenbudget-app[bot]"
    comments: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, authorization
    refuse: dict[str, int] = field(default_factory=dict)
    per_page_cap: int = 100
    url: str = ""

    def add(self, login: str, body: str) -> dict[str, Any]:
        comment = {"id": 1000 + len(self.comments), "user": {"login": login}, "body": body}
        comment["html_url"] = f"https://github.example/o/r/pull/7#issuecomment-{comment['id']}"
        self.comments.append(comment)
        return comment

    def by(self, login: str) -> list[dict[str, Any]]:
        return [c for c in self.comments if c["user"]["login"] == login]


@pytest.fixture
def github_api() -> Iterator[FakeGitHub]:
    state = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            url = urlsplit(self.path)
            state.requests.append((self.command, url.path, self.headers.get("Authorization", "")))
            if self.command in state.refuse:
                self._reply(state.refuse[self.command], {"message": "Resource not accessible by integration"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length)) if length else None
            listing = re.fullmatch(r"/repos/o/r/issues/7/comments", url.path)
            one = re.fullmatch(r"/repos/o/r/issues/comments/(\d+)", url.path)
            if self.command == "GET" and listing:
                query = parse_qs(url.query)
                per_page = min(int(query.get("per_page", ["30"])[0]), state.per_page_cap)
                page = int(query.get("page", ["1"])[0])
                chunk = state.comments[(page - 1) * per_page : page * per_page]
                headers = {}
                if page * per_page < len(state.comments):
                    following = f"{state.url}{url.path}?per_page={per_page}&page={page + 1}"
                    headers["Link"] = f'<{following}>; rel="next"'
                self._reply(200, chunk, headers)
            elif self.command == "POST" and listing:
                self._reply(201, state.add(state.identity, payload["body"]))
            elif self.command == "PATCH" and one:
                comment = next((c for c in state.comments if c["id"] == int(one.group(1))), None)
                if comment is None:
                    self._reply(404, {"message": "Not Found"})
                    return
                comment["body"] = payload["body"]
                self._reply(200, comment)
            else:
                self._reply(404, {"message": "Not Found"})

        do_GET = do_POST = do_PATCH = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- a runner for the composite action -------------------------------------------------------------


@dataclass
class StepRun:
    id: str
    returncode: int
    stdout: str
    outputs: dict[str, str]


def read_outputs(path: Path) -> dict[str, str]:
    """``$GITHUB_OUTPUT``: ``name=value`` lines and ``name<<DELIMITER`` blocks."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    found: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, index + 1)
            found[name] = "\n".join(lines[index + 1 : end])
            index = end + 1
        else:
            name, _, value = line.partition("=")
            found[name] = value
            index += 1
    return found


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a runner: this machine's, without anything of GitHub's or pytest's."""
    theirs = ("GITHUB_", "PYTEST_", "INPUT_", "RUNNER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(theirs)}
    env.update(
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_API_URL": "http://127.0.0.1:9",  # a closed port unless a test sets its server
            "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
            "GITHUB_ACTION_PATH": str(ROOT),
            "RUNNER_TEMP": str(tmp),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }
    )
    env.pop("GIT_CONFIG_COUNT", None)
    env.update(extra)
    return env


def run_action(inputs: dict[str, str], env: dict[str, str], cwd: Path, tmp: Path) -> list[StepRun]:
    """Run action.yml's steps in order, as a GitHub runner does; stop after a failed step."""
    action = load_action()
    unknown = set(inputs) - set(action["inputs"])
    assert not unknown, unknown
    context: dict[str, str] = {"github.token": TOKEN}
    for name, spec in action["inputs"].items():
        value = inputs.get(name, str(spec.get("default", "")))
        context[f"inputs.{name}"] = EXPRESSION.sub(lambda m: context[m.group(1)], value)
    done: list[StepRun] = []
    for number, step in enumerate(action["runs"]["steps"]):

        def evaluate(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("steps."):
                _, sid, _, name = expression.split(".")
                return next((s.outputs.get(name, "") for s in done if s.id == sid), "")
            return context[expression]  # a KeyError: an expression this runner does not know

        output = tmp / f"output-{number}"
        script = tmp / f"step-{number}.sh"
        script.write_text(step["run"], encoding="utf-8")
        step_env = {**env, "GITHUB_OUTPUT": str(output)}
        for key, value in step.get("env", {}).items():
            step_env[key] = EXPRESSION.sub(evaluate, str(value))
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=cwd,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        outputs = read_outputs(output)
        done.append(StepRun(step["id"], result.returncode, result.stdout + result.stderr, outputs))
        if result.returncode != 0:
            break
    return done


def run_step(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """One step of the script, with ``env`` as it is (the unit of the tests below)."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), name],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- a project with a baseline on main -------------------------------------------------------------

QUIET_PLUGINS = ["-p", "no:randomly", "-p", "no:cacheprovider"]
SUITE = """\
import json
import os
from pathlib import Path

import pytest


@pytest.mark.parametrize("size", [{size}])
def test_summarise(token_usage, size):
    token_usage.record(model="gpt-4o-mini", input_tokens=size, output_tokens=20)
    Path("seen-env.json").write_text(json.dumps(dict(os.environ)))
"""


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=base_env(cwd),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository: main holds a baseline of 120 tokens (and a 10% growth rule), branch
    feature grows the test to 170."""
    work = tmp_path_factory.mktemp("work")
    bare = tmp_path_factory.mktemp("origin") / "origin.git"
    git(work, "init", "-q")
    (work / "pyproject.toml").write_text('[tool.tokenbudget]\nmax-increase = ["total:10%"]\n')
    (work / ".gitignore").write_text("tokenbudget.md\nseen-env.json\n")
    (work / "test_app.py").write_text(SUITE.format(size=100))
    saved = subprocess.run(
        [sys.executable, "-m", "pytest", "--token-budget", "--token-budget-save-baseline", *QUIET_PLUGINS],
        cwd=work,
        env=base_env(work, GITHUB_ACTIONS="false"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert (work / "tokenbudget.baseline.json").is_file()
    git(work, "add", "pyproject.toml", ".gitignore", "test_app.py", "tokenbudget.baseline.json")
    git(work, "commit", "-q", "-m", "baseline")
    git(work, "checkout", "-q", "-b", "feature")
    (work / "test_app.py").write_text(SUITE.format(size=150))
    git(work, "commit", "-q", "-am", "bigger prompt")
    git(work.parent, "clone", "-q", "--bare", str(work), str(bare))
    return bare


@pytest.fixture
def checkout(origin: Path, tmp_path: Path) -> Path:
    """The pull request's head as actions/checkout leaves it by default: a shallow clone of that one
    branch, so origin/main is not here."""
    target = tmp_path / "repo"
    git(tmp_path, "clone", "-q", "--depth=1", "--branch=feature", f"file://{origin}", str(target))
    assert not git(target, "branch", "-r", "--list", "origin/main")
    return target


def pull_request_event(tmp: Path, number: int = 7) -> str:
    path = tmp / "event.json"
    path.write_text(json.dumps({"pull_request": {"number": number, "base": {"ref": "main"}}}))
    return str(path)


# -- the action, run -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_action_reports_a_regression_in_the_summary_and_one_comment(
    checkout: Path, tmp_path: Path, github_api: FakeGitHub
) -> None:
    github_api.add("alice", f"> {MARKER}\n> ### ❌ Token budget: over budget\n\nwhy did this grow?")
    github_api.add("bob", f"The bot's comment starts with {MARKER}, see the README.")
    env = base_env(
        tmp_path,
        GITHUB_BASE_REF="main",
        GITHUB_EVENT_PATH=pull_request_event(tmp_path),
        GITHUB_API_URL=github_api.url,
    )
    inputs = {
        "python": sys.executable,
        "comment": "true",
        # quoted as a user would write it: split like a shell, never run by one
        "pytest-args": "-p no:randomly -p no:cacheprovider -k 'summarise and not nothing'",
    }
    steps = run_action(inputs, env, checkout, tmp_path)
    by_id = {step.id: step for step in steps}
    assert [step.id for step in steps] == ["baseline", "pytest", "summary", "comment", "exit"]
    assert [step.returncode for step in steps[:4]] == [0, 0, 0, 0], [s.stdout for s in steps]

    # the base branch was fetched into the shallow clone and compared with
    assert by_id["baseline"].outputs["source"] == "git:origin/main"
    assert "fetched origin/main" in by_id["baseline"].stdout
    assert git(checkout, "rev-parse", "origin/main")

    # pytest: over the 10% growth rule, so exit status 1; annotations still come
    assert by_id["pytest"].outputs["exit-code"] == "1"
    assert "::error" in by_id["pytest"].stdout
    report = (checkout / "tokenbudget.md").read_text("utf-8")
    assert Path(by_id["pytest"].outputs["markdown"]) == (checkout / "tokenbudget.md").resolve()
    assert report.startswith(MARKER + "\n### ❌ Token budget: over budget")
    assert "origin/main" in report

    # the suite saw neither the token nor the summary file (the plugin did not write it as well)
    seen = json.loads((checkout / "seen-env.json").read_text("utf-8"))
    assert TOKEN not in json.dumps(seen)
    assert "GITHUB_STEP_SUMMARY" not in seen
    assert not [key for key in seen if key.startswith("INPUT_")]

    # the job summary holds the report once
    summary = (tmp_path / "summary.md").read_text("utf-8")
    assert summary == report

    # one comment, created: the quoting reply and the description are not ours
    created = github_api.by("tokenbudget-app[bot]")
    assert len(created) == 1
    assert created[0]["body"] == report
    assert by_id["comment"].outputs["comment-url"] == created[0]["html_url"]
    assert {auth for _, _, auth in github_api.requests} == {f"Bearer {TOKEN}"}
    assert [(method, path) for method, path, _ in github_api.requests] == [
        ("GET", "/repos/o/r/issues/7/comments"),
        ("POST", "/repos/o/r/issues/7/comments"),
    ]

    # the action fails as pytest did, after the report was out
    assert by_id["exit"].returncode == 1

    # the next push: the same comment is updated, nothing is added; no job summary this time
    (tmp_path / "summary.md").unlink()
    github_api.requests.clear()
    again = run_action({**inputs, "job-summary": "false"}, env, checkout, tmp_path)
    assert [step.returncode for step in again] == [0, 0, 0, 0, 1]
    assert [(method, path) for method, path, _ in github_api.requests] == [
        ("GET", "/repos/o/r/issues/7/comments"),
        ("PATCH", f"/repos/o/r/issues/comments/{created[0]['id']}"),
    ]
    assert len(github_api.by("tokenbudget-app[bot]")) == 1
    assert not (tmp_path / "summary.md").exists()  # neither the step nor the plugin wrote it


@pytest.mark.slow
def test_outside_a_pull_request_there_is_no_baseline_and_no_comment(
    checkout: Path, tmp_path: Path, github_api: FakeGitHub
) -> None:
    env = base_env(tmp_path, GITHUB_API_URL=github_api.url)  # a push: no base ref, no PR event
    inputs = {"python": sys.executable, "comment": "true", "pytest-args": " ".join(QUIET_PLUGINS)}
    steps = run_action(inputs, env, checkout, tmp_path)
    assert [step.returncode for step in steps] == [0, 0, 0, 0, 0], [s.stdout for s in steps]
    assert steps[0].outputs["source"] == ""
    assert "not a pull request" in steps[3].stdout
    assert github_api.requests == []
    summary = (tmp_path / "summary.md").read_text("utf-8")
    assert summary.startswith(MARKER + "\n### ℹ️ Token budget: no budgets")


@pytest.mark.slow
@pytest.mark.parametrize("ref", ["main:x", "-main", "two words", "a..b", "main\nx"])
def test_a_baseline_ref_that_is_no_branch_name_is_refused(ref: str, tmp_path: Path) -> None:
    env = base_env(tmp_path, INPUT_BASELINE_REF=ref, GITHUB_OUTPUT=str(tmp_path / "out"))
    done = run_step("baseline", env, tmp_path)
    assert done.returncode == 1
    assert "::error::pytest-tokenbudget action: baseline-ref" in done.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unbalanced_pytest_args_are_an_error(tmp_path: Path) -> None:
    env = base_env(tmp_path, INPUT_PYTEST_ARGS="-k 'open", GITHUB_OUTPUT=str(tmp_path / "out"))
    done = run_step("pytest", env, tmp_path)
    assert done.returncode == 1
    assert "::error::pytest-tokenbudget action: input pytest-args" in done.stdout


@pytest.mark.slow
def test_a_flag_input_must_be_true_or_false(tmp_path: Path) -> None:
    done = run_step("summary", base_env(tmp_path, INPUT_JOB_SUMMARY="yes"), tmp_path)
    assert done.returncode == 1
    assert "input job-summary: expected true or false" in done.stdout


@pytest.mark.slow
def test_the_exit_step_needs_pytests_status(tmp_path: Path) -> None:
    assert run_step("exit", base_env(tmp_path, PYTEST_EXIT_CODE="5"), tmp_path).returncode == 5
    missing = run_step("exit", base_env(tmp_path, PYTEST_EXIT_CODE=""), tmp_path)
    assert missing.returncode == 1
    assert "pytest did not run" in missing.stdout


@pytest.mark.slow
def test_the_token_reaches_git_only_for_githubs_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = action_module()
    git(tmp_path, "init", "-q")
    git(tmp_path, "remote", "add", "origin", "https://github.com/o/r.git")
    for key in [k for k in os.environ if k.startswith("GIT_CONFIG_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("INPUT_GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    env = module._auth_env(tmp_path)
    credential = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraheader"
    assert env["GIT_CONFIG_VALUE_0"] == f"AUTHORIZATION: basic {credential}"
    git(tmp_path, "remote", "set-url", "origin", "https://elsewhere.example/o/r.git")
    assert "GIT_CONFIG_COUNT" not in module._auth_env(tmp_path)
    assert TOKEN not in (tmp_path / ".git" / "config").read_text()


# -- the comment step -----------------------------------------------------------------------------


def comment_env(tmp: Path, api: FakeGitHub, **extra: str) -> dict[str, str]:
    (tmp / "tokenbudget.md").write_text(f"{MARKER}\n### ✅ Token budget: within budget\n", encoding="utf-8")
    settings = {
        "GITHUB_API_URL": api.url,
        "GITHUB_EVENT_PATH": pull_request_event(tmp),
        "GITHUB_OUTPUT": str(tmp / "out"),
        "INPUT_COMMENT": "true",
        "INPUT_GITHUB_TOKEN": TOKEN,
    }
    return base_env(tmp, **{**settings, **extra})


@pytest.mark.slow
def test_the_comment_is_found_on_a_later_page(tmp_path: Path, github_api: FakeGitHub) -> None:
    github_api.per_page_cap = 30
    for index in range(70):
        github_api.add("someone", f"comment {index} mentioning {MARKER}")
    ours = github_api.add("ci-bot-user", f"{MARKER}\nold report")  # a PAT: a plain user account
    done = run_step("comment", comment_env(tmp_path, github_api), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ours["body"].startswith(MARKER + "\n### ✅")
    assert [m for m, _, _ in github_api.requests] == ["GET", "GET", "GET", "PATCH"]
    assert len(github_api.comments) == 71


@pytest.mark.slow
def test_comment_author_narrows_the_choice(tmp_path: Path, github_api: FakeGitHub) -> None:
    forged = github_api.add("mallory", f"{MARKER}\nnot the report")
    ours = github_api.add("tokenbudget-app[bot]", f"{MARKER}\nold report")
    env = comment_env(tmp_path, github_api, INPUT_COMMENT_AUTHOR="TokenBudget-App[bot]")  # any case
    done = run_step("comment", env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert forged["body"] == f"{MARKER}\nnot the report"
    assert "### ✅" in ours["body"]


@pytest.mark.slow
def test_a_comment_it_may_not_edit_gets_a_new_one(tmp_path: Path, github_api: FakeGitHub) -> None:
    github_api.add("mallory", f"{MARKER}\nnot the report")
    github_api.refuse["PATCH"] = 403
    done = run_step("comment", comment_env(tmp_path, github_api), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot be updated (403): posting a new one" in done.stdout
    assert [c["body"] for c in github_api.by("tokenbudget-app[bot]")] == [
        (tmp_path / "tokenbudget.md").read_text("utf-8")
    ]


@pytest.mark.slow
def test_a_read_only_token_is_a_warning(tmp_path: Path, github_api: FakeGitHub) -> None:
    """A pull request from a fork: GITHUB_TOKEN cannot write; the job does not fail for it."""
    github_api.refuse["POST"] = 403
    done = run_step("comment", comment_env(tmp_path, github_api), tmp_path)
    assert done.returncode == 0
    assert "::warning::this token may not comment on the pull request (403)" in done.stdout
    assert "workflow_run" in done.stdout


@pytest.mark.slow
def test_a_server_error_fails_the_step(tmp_path: Path, github_api: FakeGitHub) -> None:
    github_api.refuse["GET"] = 502
    done = run_step("comment", comment_env(tmp_path, github_api), tmp_path)
    assert done.returncode == 1
    assert "::error::pytest-tokenbudget action: GitHub API: 502" in done.stdout


@pytest.mark.slow
def test_comment_false_sends_nothing(tmp_path: Path, github_api: FakeGitHub) -> None:
    done = run_step("comment", comment_env(tmp_path, github_api, INPUT_COMMENT="false"), tmp_path)
    assert done.returncode == 0
    assert github_api.requests == []


def test_a_long_report_is_cut_to_fit_a_comment() -> None:
    module = action_module()
    body = module.comment_body("x\n" * 40_000)
    assert body.startswith(MARKER + "\nx\n")
    assert len(body) <= 65_536


# -- which comment is ours: the action (Python) and tokenbudget-comment.yml (JavaScript) ---------

CASES = [
    pytest.param([], None, id="none yet: create"),
    pytest.param([("alice", f"> {MARKER}\n> quoted")], None, id="a quoting reply is not ours"),
    pytest.param([("bob", f"see {MARKER}")], None, id="a mention mid-text is not ours"),
    pytest.param([("bob", f" {MARKER}\nindented")], None, id="it must start the comment"),
    pytest.param([("alice", "hi"), ("my-app[bot]", f"{MARKER}\nold")], 1, id="a GitHub App's comment"),
    pytest.param([("ci-user", f"{MARKER}\nold")], 0, id="a PAT's comment"),
    pytest.param([("github-actions[bot]", f"{MARKER}\na"), ("x[bot]", f"{MARKER}\nb")], 0, id="the oldest"),
]


def listed(existing: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"id": 10 + i, "user": {"login": who}, "body": body} for i, (who, body) in enumerate(existing)]


@pytest.mark.parametrize(("existing", "chosen"), CASES)
def test_python_chooses_the_comment_that_starts_with_the_marker(
    existing: list[tuple[str, str]], chosen: int | None
) -> None:
    comments = listed(existing)
    found = action_module().choose(comments)
    assert (found["id"] - 10 if found else None) == chosen


NODE_HARNESS = r"""
const fs = require('fs');
const state = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const calls = [];
const failing = (name) => async (params) => {
  calls.push([name, params]);
  if (state.refuse && state.refuse[name]) {
    const error = new Error('refused');
    error.status = state.refuse[name];
    throw error;
  }
  return { data: {} };
};
const github = {
  paginate: async (method, params) => { calls.push(['listComments', params]); return state.comments; },
  rest: {
    issues: {
      listComments: 'listComments',
      updateComment: failing('updateComment'),
      createComment: failing('createComment'),
    },
    pulls: { get: async () => ({ data: { head: { sha: state.head_sha } } }) },
  },
};
const context = { repo: { owner: 'o', repo: 'r' } };
const core = {
  notice: (m) => calls.push(['notice', m]),
  warning: (m) => calls.push(['warning', m]),
  info: () => {},
};
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
new AsyncFunction('require', 'github', 'context', 'core', state.script)(require, github, context, core)
  .then(() => console.log(JSON.stringify(calls)))
  .catch((error) => { console.error(error); process.exit(1); });
"""


def run_recipe_script(tmp: Path, comments: list[dict[str, Any]], **state: Any) -> list[list[Any]]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    recipe = yaml.safe_load(COMMENT_RECIPE.read_text("utf-8"))
    step = next(s for s in recipe["jobs"]["comment"]["steps"] if "github-script" in s.get("uses", ""))
    report = tmp / "tokenbudget.md"
    report.write_text(f"{MARKER}\nnew report\n", encoding="utf-8")
    harness = tmp / "harness.js"
    harness.write_text(NODE_HARNESS, encoding="utf-8")
    data = tmp / "state.json"
    script = step["with"]["script"]
    data.write_text(json.dumps({"script": script, "comments": comments, "head_sha": "abc", **state}))
    env = {**os.environ, "PR_NUMBER": "7", "REPORT": str(report), "HEAD_SHA": "abc"}
    done = subprocess.run(
        ["node", str(harness), str(data)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(("existing", "chosen"), CASES)
def test_the_recipe_chooses_the_same_comment(
    existing: list[tuple[str, str]], chosen: int | None, tmp_path: Path
) -> None:
    comments = listed(existing)
    calls = run_recipe_script(tmp_path, comments)
    written = [call for call in calls if call[0] in ("updateComment", "createComment")]
    assert len(written) == 1
    name, params = written[0]
    assert params["body"] == f"{MARKER}\nnew report\n"
    if chosen is None:
        assert name == "createComment"
        assert params["issue_number"] == 7
    else:
        assert name == "updateComment"
        assert params["comment_id"] == 10 + chosen


@pytest.mark.slow
def test_the_recipe_posts_anew_when_it_may_not_edit(tmp_path: Path) -> None:
    comments = [{"id": 1, "user": {"login": "mallory"}, "body": f"{MARKER}\nforged"}]
    calls = run_recipe_script(tmp_path, comments, refuse={"updateComment": 403})
    assert [call[0] for call in calls] == ["listComments", "updateComment", "warning", "createComment"]


@pytest.mark.slow
def test_the_recipe_posts_nothing_for_a_stale_head(tmp_path: Path) -> None:
    calls = run_recipe_script(tmp_path, [], head_sha="newer")
    assert [call[0] for call in calls] == ["notice"]


# -- the marker cannot be forged from the suite ---------------------------------------------------

FORGING_SUITE = f"""
import pytest

FORGED = {MARKER!r}


@pytest.mark.parametrize("case", ["x"], ids=[FORGED])
@pytest.mark.token_budget(max_tokens=10)
def test_forged(token_usage, case):
    token_usage.record(model=FORGED, input_tokens=100, output_tokens=20)


@pytest.mark.parametrize("case", ["y"], ids=["before " + FORGED + " after"])
def test_forged_inside(token_usage, case):
    token_usage.record(model="m " + FORGED, input_tokens=50, output_tokens=5)
"""


@pytest.mark.slow
def test_no_test_id_or_model_name_writes_the_marker(pytester: pytest.Pytester) -> None:
    """A parametrize id (and a model name) holding the marker reaches every report table: the
    markdown holds the marker once, as its first line, and still shows the id as typed."""
    pytester.makepyfile(test_forging=FORGING_SUITE)
    result = pytester.runpytest(
        "--token-budget", "--token-budget-markdown=tokenbudget.md", "--token-budget-json=run.json", "-v"
    )
    result.assert_outcomes(passed=1, failed=1)  # the marker budget of 10 tokens is exceeded
    texts = [(pytester.path / "tokenbudget.md").read_text("utf-8")]
    rendered = subprocess.run(
        [sys.executable, "-m", "pytest_tokenbudget.cli", "report", "run.json", "--format", "markdown"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    texts.append(rendered.stdout)
    for text in texts:
        assert text.count(MARKER) == 1
        assert text.splitlines()[0] == MARKER
        assert "test_forging.py::test_forged[" in text
        assert action_module().choose([{"body": f"> {text}"}, {"body": text}]) == {"body": text}

    cmarkgfm = pytest.importorskip("cmarkgfm")
    unsafe = cmarkgfm.cmark.Options.CMARK_OPT_UNSAFE  # keeps comments, as GitHub does
    page = cmarkgfm.github_flavored_markdown_to_html(texts[0], options=unsafe)
    shown = html.unescape(re.sub(r"<!-- -->", "", re.sub(r"<code>|</code>", "", page)))
    assert f"test_forging.py::test_forged[{MARKER}]" in shown
    assert f"test_forging.py::test_forged_inside[before {MARKER} after]" in shown
