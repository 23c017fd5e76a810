"""The package metadata in pyproject.toml, checked without building anything.

The entry points name objects that import (pytest loads ``pytest11`` at start-up in every session of
an environment the package is installed in; a broken one breaks every project there), ``py.typed``
ships in both distributions, the extras say what they bring, and the version agrees with the
installed metadata. ``.ci/check-package`` builds the real sdist and wheel and installs them. The
release workflow (.github/workflows/release.yml) publishes only from a version tag, by trusted
publishing, with the OIDC token in the one job that runs no code of this repository.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.resources
import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
import yaml

import pytest_tokenbudget

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
PROJECT = PYPROJECT["project"]
HATCH = PYPROJECT["tool"]["hatch"]["build"]["targets"]
NAME = "pytest_tokenbudget"
USER_EXTRAS = ("prices", "junit", "tokenizer", "suggest", "otel")


def resolve(value: str) -> Any:
    """An entry point's object: ``module`` or ``module:attr.attr``, as importlib.metadata loads it."""
    match = re.fullmatch(r"(?P<module>[\w.]+)\s*(?::\s*(?P<attr>[\w.]+))?", value)
    assert match, f"not an entry point reference: {value!r}"
    found = importlib.import_module(match["module"])
    for attr in match["attr"].split(".") if match["attr"] else ():
        found = getattr(found, attr)
    return found


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def expanded(extra: str) -> set[str]:
    """The names an extra brings, following ``pytest-tokenbudget[...]`` self-references."""
    names: set[str] = set()
    for requirement in PROJECT["optional-dependencies"][extra]:
        name = requirement_name(requirement)
        if name == PROJECT["name"]:
            inner = re.search(r"\[([^\]]*)\]", requirement)
            assert inner, requirement
            for other in inner[1].split(","):
                names |= expanded(other.strip())
        else:
            names.add(name)
    return names


def installed() -> Any:
    try:
        return distribution(PROJECT["name"])
    except PackageNotFoundError:
        pytest.fail(f"{PROJECT['name']} is not installed: pip install -e .")


def test_the_pytest_plugin_entry_point_imports_the_plugin() -> None:
    plugins = PROJECT["entry-points"]["pytest11"]
    assert plugins == {"tokenbudget": f"{NAME}.plugin"}
    module = resolve(plugins["tokenbudget"])
    assert module.__name__ == f"{NAME}.plugin"
    for hook in ("pytest_addoption", "pytest_configure"):
        assert callable(getattr(module, hook, None)), f"the plugin module has no {hook}"


def test_the_console_script_runs() -> None:
    scripts = PROJECT["scripts"]
    assert set(scripts) == {"tokenbudget"}
    main = resolve(scripts["tokenbudget"])
    assert callable(main)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


def test_the_installed_entry_points_are_those_of_pyproject() -> None:
    """A stale install (pyproject.toml changed, not reinstalled) would test other entry points."""
    points = {(ep.group, ep.name): ep.value for ep in installed().entry_points}
    declared = {
        **{("pytest11", k): v for k, v in PROJECT["entry-points"]["pytest11"].items()},
        **{("console_scripts", k): v for k, v in PROJECT["scripts"].items()},
    }
    assert points == declared, "installed metadata differs from pyproject.toml: pip install -e ."
    for point in installed().entry_points:
        assert point.load() is resolve(point.value)


def test_the_version_is_the_installed_one() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", PROJECT["version"])
    assert installed().version == PROJECT["version"], "stale install: pip install -e ."
    assert pytest_tokenbudget.__version__ == PROJECT["version"]


def test_py_typed_ships_in_the_wheel_and_the_sdist() -> None:
    assert (ROOT / NAME / "py.typed").is_file()
    assert "Typing :: Typed" in PROJECT["classifiers"]
    wheel, sdist = HATCH["wheel"], HATCH["sdist"]
    assert NAME in wheel["packages"]  # every file of the package directory, py.typed included
    assert f"/{NAME}" in sdist["include"] or NAME in sdist["include"]
    for target in (wheel, sdist):
        assert "only-include" not in target
        for pattern in target.get("exclude", []):
            assert not fnmatch.fnmatch(f"{NAME}/py.typed", pattern.lstrip("/")), pattern
    assert (importlib.resources.files(NAME) / "py.typed").is_file()


def test_the_metadata_an_index_shows() -> None:
    assert PROJECT["name"] == "pytest-tokenbudget"
    assert PROJECT["readme"] == "README.md"
    assert (ROOT / PROJECT["readme"]).is_file()
    assert PROJECT["license"] == "MIT"
    assert "Framework :: Pytest" in PROJECT["classifiers"]
    minimum = re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"])
    assert minimum, PROJECT["requires-python"]
    versions = [
        int(c.rsplit(".", 1)[1]) for c in PROJECT["classifiers"] if re.fullmatch(r".*Python :: 3\.\d+", c)
    ]
    assert versions, "no Programming Language :: Python :: 3.X classifier"
    assert min(versions) == int(minimum[1]), "requires-python and the classifiers disagree"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py3{minimum[1]}"
    assert [requirement_name(r) for r in PROJECT["dependencies"]] == ["pytest"]


def test_the_extras() -> None:
    extras = PROJECT["optional-dependencies"]
    assert expanded("prices") == {"genai-prices"}
    assert expanded("junit") == {"junit-xml"}
    assert expanded("tokenizer") == {"tiktoken"}
    assert expanded("suggest") == {"tomlkit"}
    assert expanded("otel") == {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"}
    assert expanded("all") == set().union(*(expanded(extra) for extra in USER_EXTRAS))
    assert expanded("all") <= expanded("test"), "the test extra must cover every optional feature"
    assert set(extras) == {*USER_EXTRAS, "all", "test"}


RELEASE = ROOT / ".github" / "workflows" / "release.yml"


def release() -> dict[Any, Any]:
    workflow = yaml.safe_load(RELEASE.read_text("utf-8"))
    assert isinstance(workflow, dict)
    return workflow


def test_the_release_workflow_runs_on_version_tags_only() -> None:
    workflow = release()
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the bare key `on` as True
    assert on == {"push": {"tags": ["v*.*.*"]}}
    build = workflow["jobs"]["build"]
    script = "\n".join(step.get("run", "") for step in build["steps"])
    assert '"$TAG" != "v$version"' in script  # the tag names the version in pyproject.toml
    assert ".ci/check-package" in script
    assert "python -m build" in script
    assert "twine check --strict dist/*" in script


def test_the_release_workflow_holds_the_oidc_token_only_to_publish() -> None:
    workflow = release()
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    assert set(jobs) == {"build", "publish"}
    assert jobs["build"]["permissions"] == {"contents": "read"}
    publish = jobs["publish"]
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    uses = [step["uses"].partition("@")[0] for step in publish["steps"]]
    assert uses == ["actions/download-artifact", "pypa/gh-action-pypi-publish"]  # no checkout, no run
    upload = next(
        s for s in jobs["build"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")
    )
    assert publish["steps"][0]["with"]["name"] == upload["with"]["name"]
    # trusted publishing: no token or password of any kind
    assert "with" not in publish["steps"][1] or not {"password", "user"} & set(publish["steps"][1]["with"])
    assert "secrets." not in RELEASE.read_text("utf-8")


def test_the_release_workflow_pins_its_actions_and_keeps_no_token() -> None:
    text = RELEASE.read_text("utf-8")
    lines = re.findall(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", text, re.MULTILINE)
    assert len(lines) == 5
    for ref, comment in lines:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
        assert re.match(r"\s+# v\d+\.\d+\.\d+$", comment), f"{ref}: no release named"
    for job in release()["jobs"].values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
            assert "${{" not in step.get("run", ""), step["run"]
