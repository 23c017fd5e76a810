"""The steps of the pytest-tokenbudget composite action (``action.yml`` at the repository root).

``python tokenbudget_action.py STEP`` with STEP one of:

- ``baseline``: make sure ``origin/BRANCH`` (the pull request's base branch, or the
  ``baseline-ref`` input) is here, fetching that one branch if the checkout was shallow; its
  output ``source`` is the ``--token-budget-baseline`` value (empty outside pull requests).
- ``pytest``: run ``python -m pytest --token-budget`` with the markdown report, the baseline and
  the ``pytest-args`` input; its outputs are ``exit-code`` and ``markdown``. It exits 0 whatever
  pytest did, so the summary and the comment follow a failed run too; ``exit`` ends with it.
- ``summary``: append the markdown report to ``$GITHUB_STEP_SUMMARY`` (once: pytest runs without
  that variable, so the plugin does not add it as well).
- ``comment``: create or update the pull request's comment holding the report: the first comment
  that *starts* with the marker, whoever posted it (the workflow's token, a GitHub App, a personal
  access token); ``comment-author`` narrows that to one login.
- ``exit``: exit with pytest's status.

Standard library only, so it runs on whichever Python has the project installed. Every value comes
from the environment (action.yml hands each input over through ``env:``, never inside a shell
script) and every subprocess gets a list of arguments: nothing here is read by a shell. The token
reaches git (one fetch, through the environment, not the command line or .git/config) and the
GitHub API, never the test suite.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "<!-- pytest-tokenbudget -->"  # the report's first line (pytest_tokenbudget.report.markdown)
BODY_LIMIT = 65_000  # characters; GitHub refuses a comment over 65,536
MAX_PAGES = 100  # of 100 comments each
TIMEOUT = 30  # seconds, per API request and per git command


class ActionError(Exception):
    """A problem to report as ``::error::`` and exit 1."""


# -- workflow commands and outputs -------------------------------------------------------------


def _escape(text: str) -> str:
    """A workflow command's message (the toolkit's ``escapeData``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def command(name: str, message: str) -> None:
    print(f"::{name}::{_escape(message)}", flush=True)


def set_output(name: str, value: str) -> None:
    """Append ``name`` to ``$GITHUB_OUTPUT`` (a random delimiter: any value is safe)."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return
    delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def _input(name: str, default: str = "") -> str:
    return os.environ.get(f"INPUT_{name}", "").strip() or default


def _flag(name: str, default: str) -> bool:
    value = _input(name, default).lower()
    if value not in ("true", "false"):
        raise ActionError(f"input {name.lower().replace('_', '-')}: expected true or false, not {value!r}")
    return value == "true"


def _workdir() -> Path:
    path = Path(_input("WORKING_DIRECTORY", "."))
    if not path.is_dir():
        raise ActionError(f"input working-directory: {path} is not a directory")
    return path


# -- baseline ----------------------------------------------------------------------------------


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def valid_branch(name: str) -> bool:
    """A branch name git accepts, and nothing an option or a ``REF:PATH`` could be read from."""
    if not name or name.startswith("-") or ":" in name or any(c.isspace() or ord(c) < 32 for c in name):
        return False
    return _git(Path.cwd(), "check-ref-format", "--branch", name).returncode == 0


def _auth_env(cwd: Path) -> dict[str, str]:
    """git's environment for one fetch from GitHub with the token, as actions/checkout passes it
    (an ``http.<server>/.extraheader``), but through GIT_CONFIG_* variables: never on a command
    line, never written to .git/config. Nothing is added for a remote elsewhere or without a token."""
    env = dict(os.environ)
    token = _input("GITHUB_TOKEN")
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    url = _git(cwd, "remote", "get-url", "origin").stdout.strip()
    if not token or not url.startswith(server + "/"):
        return env
    credential = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    command("add-mask", credential)
    count = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
    env.update(
        {
            "GIT_CONFIG_COUNT": str(count + 1),
            f"GIT_CONFIG_KEY_{count}": f"http.{server}/.extraheader",
            f"GIT_CONFIG_VALUE_{count}": f"AUTHORIZATION: basic {credential}",
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    return env


def step_baseline() -> int:
    ref = _input("BASELINE_REF") or os.environ.get("GITHUB_BASE_REF", "").strip()
    if not ref:
        print("no baseline-ref and not a pull request: no baseline comparison from the action")
        set_output("source", "")
        return 0
    if not valid_branch(ref):
        raise ActionError(f"baseline-ref {ref!r} is not a branch name")
    cwd = _workdir()
    remote = f"refs/remotes/origin/{ref}"
    if _git(cwd, "rev-parse", "--verify", "--quiet", f"{remote}^{{commit}}").returncode != 0:
        shallow = _git(cwd, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
        fetch = ["fetch", "--no-tags", "--no-recurse-submodules", *(["--depth=1"] if shallow else [])]
        done = _git(cwd, *fetch, "origin", f"+refs/heads/{ref}:{remote}", env=_auth_env(cwd))
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["git fetch failed"])[-1]
            command("warning", f"could not fetch origin/{ref} for the baseline: {reason}")
        else:
            print(f"fetched origin/{ref} for the baseline")
    path = _input("BASELINE_FILE")
    source = f"git:origin/{ref}:{path}" if path else f"git:origin/{ref}"
    print(f"baseline: {source}")
    set_output("source", source)
    return 0


# -- pytest ------------------------------------------------------------------------------------


def pytest_command(baseline: str) -> list[str]:
    try:
        extra = shlex.split(_input("PYTEST_ARGS"))
    except ValueError as exc:
        raise ActionError(f"input pytest-args: {exc}") from None
    args = [sys.executable, "-m", "pytest", "--token-budget"]
    args.append(f"--token-budget-markdown={_input('MARKDOWN', 'tokenbudget.md')}")
    if _input("JSON"):
        args.append(f"--token-budget-json={_input('JSON')}")
    if baseline:
        args.append(f"--token-budget-baseline={baseline}")
    return args + extra


def step_pytest() -> int:
    cwd = _workdir()
    args = pytest_command(os.environ.get("TOKENBUDGET_BASELINE", "").strip())
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPUT_")}
    env.pop("GITHUB_STEP_SUMMARY", None)  # the summary step adds the report, once
    markdown = (cwd / _input("MARKDOWN", "tokenbudget.md")).resolve()
    markdown.unlink(missing_ok=True)  # a report left by an earlier run is not this run's
    print(shlex.join(args), flush=True)
    code = subprocess.run(args, cwd=cwd, env=env, check=False).returncode
    set_output("exit-code", str(code))
    set_output("markdown", str(markdown))
    return 0


# -- summary -----------------------------------------------------------------------------------


def _report(*, warn: bool = True) -> Path | None:
    path = _workdir() / _input("MARKDOWN", "tokenbudget.md")
    if path.is_file():
        return path
    if warn:
        command("warning", f"no markdown report at {path}: pytest stopped before the end of the session")
    return None


def step_summary() -> int:
    if not _flag("JOB_SUMMARY", "true"):
        return 0
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    path = _report()
    if not target or path is None:
        return 0
    text = path.read_text(encoding="utf-8")
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    return 0


# -- comment -----------------------------------------------------------------------------------


def choose(comments: list[dict[str, Any]], author: str = "") -> dict[str, Any] | None:
    """The comment to update: the first (oldest) whose body starts with the marker, by ``author``
    when one is named. A comment that only contains the marker (a reply quoting the report, a
    description of it) is someone else's."""
    for comment in comments:
        if not str(comment.get("body") or "").startswith(MARKER):
            continue
        login = str((comment.get("user") or {}).get("login") or "")
        if author and login.casefold() != author.casefold():
            continue
        return comment
    return None


def comment_body(text: str) -> str:
    if not text.startswith(MARKER):
        text = f"{MARKER}\n{text}"
    if len(text) > BODY_LIMIT:
        text = text[:BODY_LIMIT].rsplit("\n", 1)[0] + "\n\n_… report cut to fit a comment_\n"
    return text


class GitHub:
    """The few issue-comment calls of GitHub's REST API, with urllib."""

    def __init__(self, api: str, repo: str, token: str) -> None:
        self.api = api.rstrip("/")
        self.repo = repo
        self.token = token

    def request(self, method: str, url: str, payload: Any = None) -> tuple[Any, dict[str, str]]:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "pytest-tokenbudget-action",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            raw = response.read()
            return (json.loads(raw) if raw else None), dict(response.headers)

    def comments(self, number: int) -> list[dict[str, Any]]:
        url: str | None = f"{self.api}/repos/{self.repo}/issues/{number}/comments?per_page=100"
        found: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page, headers = self.request("GET", url)
            found += [c for c in page or [] if isinstance(c, dict)]
            url = _next_page(headers.get("Link") or headers.get("link") or "", self.api)
        return found

    def update(self, comment_id: int, body: str) -> dict[str, Any]:
        url = f"{self.api}/repos/{self.repo}/issues/comments/{int(comment_id)}"
        return self.request("PATCH", url, {"body": body})[0] or {}

    def create(self, number: int, body: str) -> dict[str, Any]:
        url = f"{self.api}/repos/{self.repo}/issues/{number}/comments"
        return self.request("POST", url, {"body": body})[0] or {}


def _next_page(link: str, api: str) -> str | None:
    """The ``rel="next"`` URL of a Link header, only on the API's own host."""
    for part in link.split(","):
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if match:
            url = match.group(1)
            same = urllib.parse.urlsplit(url)[:2] == urllib.parse.urlsplit(api)[:2]
            return url if same else None
    return None


def _pr_number() -> int | None:
    text = _input("PR_NUMBER")
    if not text:
        event_path = os.environ.get("GITHUB_EVENT_PATH")
        try:
            event = json.loads(Path(event_path).read_text(encoding="utf-8")) if event_path else {}
        except (OSError, ValueError):
            event = {}
        pull = event.get("pull_request") if isinstance(event, dict) else None
        text = str(pull.get("number", "")) if isinstance(pull, dict) else ""
    if not text:
        return None
    if not re.fullmatch(r"[0-9]{1,10}", text):
        raise ActionError(f"pull request number {text!r} is not a number")
    return int(text)


def step_comment() -> int:
    if not _flag("COMMENT", "false"):
        return 0
    number = _pr_number()
    if number is None:
        command("notice", "not a pull request: the report is not posted as a comment")
        return 0
    path = _report(warn=not _flag("JOB_SUMMARY", "true"))  # else the summary step said it
    if path is None:
        return 0
    token = _input("GITHUB_TOKEN")
    if not token:
        raise ActionError("input github-token is empty: it is needed to comment")
    repo = os.environ.get("GITHUB_REPOSITORY", "")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ActionError(f"GITHUB_REPOSITORY {repo!r} is not owner/name")
    api = GitHub(os.environ.get("GITHUB_API_URL", "https://api.github.com"), repo, token)
    body = comment_body(path.read_text(encoding="utf-8"))
    try:
        posted = _post(api, number, body, _input("COMMENT_AUTHOR"))
    except urllib.error.HTTPError as exc:
        if exc.code == 403:
            command(
                "warning",
                "this token may not comment on the pull request (403). A pull request from a fork "
                "gets a read-only token: post from a workflow_run workflow instead "
                "(.github/workflows/examples/tokenbudget-comment.yml).",
            )
            return 0
        raise ActionError(f"GitHub API: {exc.code} {exc.reason} for {exc.url}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ActionError(f"GitHub API: {exc}") from None
    set_output("comment-id", str(posted.get("id", "")))
    set_output("comment-url", str(posted.get("html_url", "")))
    return 0


def _post(api: GitHub, number: int, body: str, author: str) -> dict[str, Any]:
    mine = choose(api.comments(number), author)
    if mine is not None:
        try:
            posted = api.update(int(mine["id"]), body)
        except urllib.error.HTTPError as exc:
            if exc.code not in (403, 404):
                raise
            command("warning", f"comment {mine['id']} cannot be updated ({exc.code}): posting a new one")
        else:
            print(f"updated comment {mine['id']} on #{number}")
            return posted
    posted = api.create(number, body)
    print(f"created comment {posted.get('id', '')} on #{number}")
    return posted


# -- exit --------------------------------------------------------------------------------------


def step_exit() -> int:
    code = os.environ.get("PYTEST_EXIT_CODE", "").strip()
    if not code.isdigit():
        raise ActionError("pytest did not run (no exit code from the pytest step)")
    if code != "0":
        print(f"pytest exited with status {code}")
    return int(code)


STEPS: dict[str, Callable[[], int]] = {
    "baseline": step_baseline,
    "pytest": step_pytest,
    "summary": step_summary,
    "comment": step_comment,
    "exit": step_exit,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in STEPS:
        print(f"usage: tokenbudget_action.py {{{','.join(STEPS)}}}", file=sys.stderr)
        return 2
    try:
        return STEPS[args[0]]()
    except ActionError as exc:
        command("error", f"pytest-tokenbudget action: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
