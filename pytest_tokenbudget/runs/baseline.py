"""Baselines: save a run, load one (a file or ``git:REF[:PATH]``), compare, judge growth.

A baseline is a run artifact without what changes from run to run (times, durations, verdicts,
environment, the commit, the branch, the plugin's version): the same usage at the same prices gives
the same bytes, so the file diffs well when committed and a workflow that commits it on change
commits only when the usage (or the price data it was costed with) changed.

Cost changes are split in two, so a price change is never taken for a regression of the code:
the *usage effect* prices both runs' tokens at today's prices (what the change in the code
costs); the *price effect* is what today's prices do to the base's tokens.

Thresholds (``max-increase``), one rule each: ``10%`` (total tokens), ``total:10%``,
``total:+5000``, ``test:25%`` (each test's tokens), ``test:+2000``, ``cost:5%`` (usage effect on
the cost), ``cost:+0.50`` (USD). ``min-tokens`` exempts tests smaller than it (in both runs)
from ``test:`` percentages: a 40-token test growing to 60 is not news.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..config import ConfigError, Settings
from ..model import ArtifactError, Run, Status, Tally, Verdict
from .artifact import dump_run, write_atomic

__all__ = ["Rule", "compare", "load", "parse_rules", "reduce", "save", "session_evaluator"]


# -- save ------------------------------------------------------------------------------------------


def reduce(run: Run) -> Run:
    """The run as a baseline: tests that called an LLM and the price data that costed them; no
    times, verdicts, environment, commit or branch (git knows which commit wrote the file)."""
    meta: dict[str, Any] = {}
    prices = run.meta.get("prices")
    if isinstance(prices, dict) and prices.get("version"):
        meta["prices"] = {"source": prices.get("source"), "version": prices["version"]}
    base = Run(meta=meta)
    for nodeid, entry in run.tests.items():
        if entry.total.calls:
            base.tests[nodeid] = entry
    return base


def save(run: Run, path: Path) -> Path:
    write_atomic(path, dump_run(reduce(run)))
    return path


# -- load ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    run: Run | None  # None: there is no baseline there yet (first adoption)
    source: str  # what was read, for people
    note: str = ""


def load(source: str, settings: Settings) -> Loaded:
    """The baseline named by ``source``: a path, ``git:REF`` or ``git:REF:PATH``.

    A missing file is not an error (the base branch has no baseline yet); an unreadable or foreign
    one is a :class:`ConfigError`.
    """
    if source.startswith("git:"):
        return _load_git(source, settings)
    path = Path(source)
    path = path if path.is_absolute() else settings.root / path
    if not path.is_file():
        return Loaded(None, str(path), f"no baseline at {path} yet: nothing to compare with")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"baseline {path}: cannot be read: {exc.strerror or exc}") from exc
    return Loaded(_parse(text, str(path)), str(path))


def _load_git(source: str, settings: Settings) -> Loaded:
    ref, _, path = source.removeprefix("git:").partition(":")
    if not ref:
        raise ConfigError(f"baseline {source!r}: expected git:REF or git:REF:PATH (e.g. git:origin/main)")
    top = _git(settings.root, "rev-parse", "--show-toplevel")
    if top is None:
        raise ConfigError(f"baseline {source!r}: {settings.root} is not inside a git repository")
    if not path:
        default = settings.baseline_file or settings.root / "tokenbudget.baseline.json"
        try:
            path = default.resolve().relative_to(Path(top).resolve()).as_posix()
        except ValueError:
            path = default.name
    if _git(settings.root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") is None:
        raise ConfigError(
            f"baseline {source!r}: no commit {ref!r} here (fetch it first, e.g. fetch-depth: 0)"
        )
    text = _git(settings.root, "show", f"{ref}:{path}")
    label = f"{ref}:{path}"
    if text is None:
        return Loaded(None, label, f"no baseline at {label} yet: nothing to compare with")
    return Loaded(_parse(text, label), label)


def _git(cwd: Path, *args: str) -> str | None:
    """Standard output of a git command (stripped, except file contents); None if it failed."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout if args[0] == "show" else done.stdout.strip()


def _parse(text: str, source: str) -> Run:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"baseline {source}: not valid JSON ({exc}); re-save it with --token-budget-save-baseline"
        ) from exc
    try:
        return Run.from_dict(data, source=f"baseline {source}")
    except ArtifactError as exc:
        raise ConfigError(str(exc)) from exc


# -- compare ---------------------------------------------------------------------------------------

CostOf = Callable[[str, str, Any], "float | None"]


def compare(base: Run, head: Run, cost_of: CostOf | None = None) -> dict[str, Any]:
    """Deltas of ``head`` against ``base``: totals, per model, per test, with the cost split into
    usage and price effects (``cost_of(provider, model, usage)`` prices at today's prices)."""
    base_total, head_total = base.totals(), head.totals()
    models = _models(base, head, cost_of)
    usage_effect, price_effect = _cost_effects(base, head, cost_of)
    base_tests = {k: t for k, t in base.tests.items() if t.total.calls}
    head_tests = {k: t for k, t in head.tests.items() if t.total.calls}
    tests: list[dict[str, Any]] = []
    for nodeid in sorted(set(base_tests) | set(head_tests)):
        b, h = base_tests.get(nodeid), head_tests.get(nodeid)
        before = b.total.total_tokens if b else 0
        after = h.total.total_tokens if h else 0
        swapped = b is not None and h is not None and b.models.keys() != h.models.keys()
        changed = before != after or swapped  # a model swap is a change, even at equal tokens
        status = "new" if b is None else "removed" if h is None else "changed" if changed else "same"
        if status == "same":
            continue
        entry = h or b
        cost_before = b.total.cost_usd if b else 0.0
        cost_after = h.total.cost_usd if h else 0.0
        tests.append(
            {
                "test": nodeid,
                "status": status,
                "base": before,
                "head": after,
                "delta": after - before,
                "pct": _pct(before, after),
                "cost": {
                    "base": round(cost_before, 6),
                    "head": round(cost_after, 6),
                    "delta": round(cost_after - cost_before, 6),
                },
                **(
                    {"models": {"base": sorted(b.models), "head": sorted(h.models)}}
                    if b and h and swapped
                    else {}
                ),
                "path": entry.path if entry else "",
                "line": entry.line if entry else None,
            }
        )
    tests.sort(key=_change_first)
    swaps = sum("models" in t for t in tests)
    return {
        "base": {key: base.meta[key] for key in ("prices",) if base.meta.get(key)},
        "totals": {
            metric: _delta(getattr(base_total.usage, metric), getattr(head_total.usage, metric))
            for metric in _METRICS
        }
        | {"total_tokens": _delta(base_total.total_tokens, head_total.total_tokens)},
        "cost": {
            "base": round(base_total.cost_usd, 6),
            "head": round(head_total.cost_usd, 6),
            "delta": round(head_total.cost_usd - base_total.cost_usd, 6),
            "usage_effect": None if usage_effect is None else round(usage_effect[1] - usage_effect[0], 6),
            "usage_effect_pct": None if usage_effect is None else _pct(usage_effect[0], usage_effect[1]),
            "price_effect": None if price_effect is None else round(price_effect, 6),
        },
        "models": models,
        "tests": tests,
        "counts": {
            "new": sum(t["status"] == "new" for t in tests),
            "removed": sum(t["status"] == "removed" for t in tests),
            "changed": sum(t["status"] == "changed" for t in tests),
            "unchanged": len(set(base_tests) & set(head_tests))
            - sum(t["status"] == "changed" for t in tests),
            **({"models_swapped": swaps} if swaps else {}),
        },
    }


def _change_first(test: dict[str, Any]) -> tuple[int, int, str]:
    """Growth first (largest first), then model swaps at equal tokens, then shrinkage."""
    delta = test["delta"]
    return (0 if delta > 0 else 1 if delta == 0 else 2), -abs(delta), test["test"]


_METRICS: Final = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def _delta(before: float, after: float) -> dict[str, Any]:
    return {"base": before, "head": after, "delta": after - before, "pct": _pct(before, after)}


def _pct(before: float, after: float) -> float | None:
    return round((after - before) / before, 4) if before else None


def _models(base: Run, head: Run, cost_of: CostOf | None) -> list[dict[str, Any]]:
    before, after = base.models(), head.models()
    out = []
    for key in sorted(set(before) | set(after)):
        b, h = before.get(key, Tally()), after.get(key, Tally())
        if b.total_tokens == h.total_tokens and b.calls == h.calls:
            continue
        out.append(
            {
                "model": key,
                **_delta(b.total_tokens, h.total_tokens),
                "calls": {"base": b.calls, "head": h.calls},
            }
        )
    return sorted(out, key=lambda m: (-abs(m["delta"]), m["model"]))


def _cost_effects(
    base: Run, head: Run, cost_of: CostOf | None
) -> tuple[tuple[float, float] | None, float | None]:
    """((base usage, head usage) at today's prices, price effect on the base's usage)."""
    if cost_of is None:
        return None, None
    totals = []
    for run in (base, head):
        total = 0.0
        for key, tally in run.models().items():
            provider, _, model = key.partition("/")
            cost = cost_of(provider, model, tally.usage)
            if cost is None:
                return None, None
            total += cost
        totals.append(total)
    return (totals[0], totals[1]), totals[0] - base.totals().cost_usd


# -- thresholds ------------------------------------------------------------------------------------

_RULE = re.compile(r"^(?:(?P<scope>total|tokens|test|cost):)?(?P<amount>\+?[0-9][0-9_,.]*)(?P<pct>%)?$")


@dataclass(frozen=True, slots=True)
class Rule:
    """One growth threshold: ``scope`` total | test | cost, a ``percent`` or an ``absolute`` amount."""

    text: str
    scope: str
    percent: float | None = None  # 0.10 for 10 %
    absolute: float | None = None  # tokens, or USD for cost

    def allowed(self, before: float) -> float:
        return before * self.percent if self.percent is not None else float(self.absolute or 0)


def parse_rules(texts: tuple[str, ...] | list[str], origin: str = "max-increase") -> tuple[Rule, ...]:
    rules = []
    for text in texts:
        match = _RULE.match(text.strip().lower().replace(" ", ""))
        if not match:
            raise ConfigError(
                f"{origin}: expected rules like 10%, total:10%, test:25%, cost:5%, tokens:+5000 or "
                f"cost:+0.50, got {text!r}"
            )
        scope = {"tokens": "total", None: "total"}.get(match["scope"], match["scope"])
        number = float(match["amount"].lstrip("+").replace("_", "").replace(",", ""))
        if match["pct"]:
            rules.append(Rule(text.strip(), scope, percent=number / 100))
        elif match["amount"].startswith("+"):
            rules.append(Rule(text.strip(), scope, absolute=number))
        else:
            raise ConfigError(f"{origin}: {text!r}: write a percentage (10%) or an amount with + (+5000)")
    return tuple(rules)


def judge(
    comparison: dict[str, Any], rules: tuple[Rule, ...], *, min_tokens: int, warn_at: float
) -> list[Verdict]:
    """Threshold verdicts (kind ``baseline``) for ``comparison``."""
    verdicts: list[Verdict] = []
    for rule in rules:
        if rule.scope == "total":
            d = comparison["totals"]["total_tokens"]
            verdicts.append(_verdict(rule, "total tokens", "total_tokens", d["base"], d["head"], warn_at))
        elif rule.scope == "cost":
            cost = comparison["cost"]
            if cost.get("usage_effect") is None:
                before, after = cost["base"], cost["head"]
            else:
                after = cost["base"] + cost["usage_effect"] + (cost.get("price_effect") or 0)
                before = cost["base"] + (cost.get("price_effect") or 0)  # both at today's prices
            verdicts.append(
                _verdict(rule, "cost (usage at today's prices)", "cost_usd", before, after, warn_at)
            )
        else:
            for test in comparison["tests"]:
                if test["status"] != "changed" or test["delta"] <= 0:
                    continue
                if rule.percent is not None and max(test["base"], test["head"]) < min_tokens:
                    continue
                verdict = _verdict(rule, test["test"], "total_tokens", test["base"], test["head"], warn_at)
                if verdict.status != Status.OK:
                    verdicts.append(
                        Verdict(
                            f"baseline {rule.text} {test['test']}",
                            "baseline",
                            "total_tokens",
                            verdict.limit,
                            verdict.actual,
                            verdict.status,
                            verdict.message,
                            test["test"],
                            test["path"],
                            test["line"],
                        )
                    )
    return verdicts


def _verdict(rule: Rule, subject: str, metric: str, before: float, after: float, warn_at: float) -> Verdict:
    limit = before + rule.allowed(before)
    growth = after - before
    allowed = rule.allowed(before)
    if after > limit:
        status = Status.EXCEEDED
    elif growth > 0 and allowed > 0 and growth >= warn_at * allowed:
        status = Status.WARN
    else:
        status = Status.OK
    show = _money if metric == "cost_usd" else _tokens
    pct = f" ({growth / before:+.1%})" if before else ""
    word = {Status.EXCEEDED: "grew beyond", Status.WARN: "near", Status.OK: "within"}[status]
    message = (
        f"{subject} {word} baseline {rule.text}: {show(before)} → {show(after)}{pct}, limit {show(limit)}"
    )
    return Verdict(f"baseline {rule.text}", "baseline", metric, limit, after, status, message)


def _tokens(value: float) -> str:
    return f"{round(value):,}"


def _money(value: float) -> str:
    return f"${value:,.4f}"


# -- the plugin's and tokenbudget check's evaluator --------------------------------------------------


_MISSING_STATUS = {"note": Status.OK, "warn": Status.WARN, "fail": Status.EXCEEDED}


def missing_verdict(source: str, policy: str) -> Verdict:
    """A configured baseline that is not there, as a verdict every report shows (``missing-baseline``
    says whether it is a note, a warning or a failure: a typo must not pass for first adoption)."""
    advice = {
        "note": "nothing compared (first adoption? save one with --token-budget-save-baseline)",
        "warn": "nothing compared",
        "fail": 'nothing compared, and missing-baseline = "fail"',
    }[policy]
    message = f"no baseline found at {source}: {advice}"
    return Verdict("baseline missing", "baseline", "total_tokens", 0, 0, _MISSING_STATUS[policy], message)


def session_evaluator(settings: Settings) -> Callable[[Run], list[Verdict]]:
    """Load the baseline and parse the thresholds now (errors are usage errors before any test
    runs); after the tests, compare the run with it, set ``run.comparison``, return the verdicts."""
    if not settings.baseline:
        raise ConfigError("no baseline configured")
    rules = parse_rules(settings.max_increase, "max-increase")
    loaded = load(settings.baseline, settings)

    def evaluate(run: Run) -> list[Verdict]:
        if loaded.run is None:
            verdict = missing_verdict(loaded.source, settings.missing_baseline)
            run.comparison = {"missing": loaded.source, "note": verdict.message}
            return [verdict]
        from ..pricing.prices import Pricer

        pricer = Pricer.from_settings(settings)
        comparison = compare(loaded.run, run, pricer.cost_of)
        comparison["source"] = loaded.source
        comparison["rules"] = [rule.text for rule in rules]
        run.comparison = comparison
        return judge(comparison, rules, min_tokens=settings.min_tokens, warn_at=settings.warn_at)

    return evaluate
