"""The pytest plugin (entry point ``tokenbudget``): the only package that speaks pytest.

Loading it costs nothing more than reading ``[tool.tokenbudget]``: capture, providers and reports
are imported only when the plugin is switched on (``--token-budget``, ``enabled = true``, or a
collected test that uses the ``token_budget`` marker or the ``token_usage`` fixture).

One object per role, each registered only where it has work (the way pytest registers ``LogXML``
only with ``--junitxml`` and xdist has a worker and a controller class):

* :mod:`.entry` — options, the marker, the on-demand switch; makes the :class:`~.session.Session`;
* :mod:`.session` — the pipeline a call goes through, composed in one place, and what it needs;
* :mod:`.attribution` — who is charged: the running test's phase, module and session fixtures;
* :mod:`.outcome` — per test: its entry (path, line, outcome) and its budget verdicts;
* :mod:`.worker` / :mod:`.controller` — pytest-xdist: what a worker ships, how the controller folds it in;
* :mod:`.finish` — after the loop: the session gate, the artifact and reports, the terminal summary;
* :mod:`.fixture` — the ``token_usage`` fixture.
"""

from __future__ import annotations

from .entry import (
    activate,
    pytest_addhooks,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_unconfigure,
)
from .fixture import token_usage

__all__ = [
    "activate",
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_unconfigure",
    "token_usage",
]
