"""JUnit XML: one test case per judged budget or threshold, for CI systems that read JUnit.

GitLab, Jenkins and Azure DevOps show a suite ``tokenbudget`` beside the pytest suite: a budget
that was exceeded is a failed case (message: limit, actual, overshoot), one approaching its limit
or that could not be judged is a passed case with the sentence in ``system-out``. The run's usage
numbers are the suite's properties. Written with junit-xml (imported here, never at start-up).
"""

from __future__ import annotations

import functools
from typing import Any

from .. import units as fmt
from ..model import Run, Status, Verdict

SUITE = "tokenbudget"
_PLAIN = b"\t\n" + bytes(range(0x20, 0x7F))
"""Printable ASCII, tab and newline: legal in XML; an illegal character is one of the others."""


def render(run: Run) -> str:
    """The JUnit XML document for ``run``'s verdicts."""
    from junit_xml import TestCase, TestSuite

    cases = []
    for verdict in run.verdicts:
        case = TestCase(
            name=_name(verdict),
            classname=_classname(verdict),
            elapsed_sec=0.0,
            stdout=verdict.message or None,
            file=verdict.path or None,
            line=verdict.line,  # 1-based
        )
        if verdict.status == Status.EXCEEDED:
            case.add_failure_info(message=_failure(verdict), failure_type="TokenBudgetExceeded")
        cases.append(case)
    if not cases:  # a suite with no case is rejected by some readers: say that nothing was judged
        cases.append(TestCase(name="no budgets configured", classname=SUITE, elapsed_sec=0.0))
    return _document(TestSuite(SUITE, cases, properties=_properties(run)))


def _document(suite: Any) -> str:
    """junit-xml's document for one suite, indented by ElementTree.

    junit-xml's own ``prettyprint`` re-parses the whole document with minidom to indent it, which
    is slow for the many cases of a per-test budget over a large suite; this is much faster.
    """
    from xml.etree import ElementTree

    element = suite.build_xml_doc(encoding="utf-8")
    root = ElementTree.Element("testsuites")
    for key in ("disabled", "errors", "failures", "tests"):  # the totals, as junit-xml writes them
        root.set(key, element.get(key, "0"))
    root.set("time", str(float(element.get("time", 0))))
    root.append(element)
    ElementTree.indent(root, space="\t")
    text = without_illegal_chars(ElementTree.tostring(root, encoding="unicode"))
    return f'<?xml version="1.0" encoding="utf-8"?>\n{text}\n'


def without_illegal_chars(text: str) -> str:
    """junit-xml's ``_clean_illegal_xml_chars``, run only when ``text`` holds one of them.

    Its regex tests every character against some twenty ranges (slow over many cases); here the
    few other characters are found by deleting the plain ones from the UTF-8 bytes (an ASCII byte is
    never part of another character's), and junit-xml's own function judges those.
    """
    from junit_xml import _clean_illegal_xml_chars

    utf8 = text.encode("utf-8", "surrogatepass")  # a lone surrogate is illegal, not an error
    odd = "".join(set(utf8.translate(None, _PLAIN).decode("utf-8", "surrogatepass")))
    if _clean_illegal_xml_chars(odd) == odd:
        return text
    cleaned: str = _clean_illegal_xml_chars(text)
    return cleaned


def _name(verdict: Verdict) -> str:
    return f"{verdict.name} [{verdict.metric}]"


def _classname(verdict: Verdict) -> str:
    """The test's module as a dotted name (how JUnit readers group cases), else the verdict kind."""
    if verdict.nodeid:
        return _dotted(verdict.nodeid.partition("::")[0])
    return f"{SUITE}.{verdict.kind}"


@functools.lru_cache(maxsize=4096)  # a run has few test files and a verdict per test
def _dotted(path: str) -> str:
    return SUITE + "." + path.removesuffix(".py").replace("/", ".")


def _failure(verdict: Verdict) -> str:
    over = verdict.overshoot
    by = f" ({over:+.0%})" if over is not None else ""
    actual, limit = _number(verdict.metric, verdict.actual), _number(verdict.metric, verdict.limit)
    head = f"{verdict.metric}: {actual} > {limit}{by}"
    return f"{head}: {verdict.message}" if verdict.message else head


def _number(metric: str, value: float) -> str:
    if metric.startswith("cost"):
        return fmt.money(value)
    return fmt.tokens(int(value)) if float(value).is_integer() else f"{value:g}"


def _properties(run: Run) -> dict[str, str]:
    totals = run.totals()
    u = totals.usage
    props = {
        "calls": str(totals.calls),
        "input_tokens": str(u.input_tokens),
        "cached_input_tokens": str(u.cached_input_tokens),
        "cache_write_tokens": str(u.cache_write_tokens),
        "output_tokens": str(u.output_tokens),
        "reasoning_tokens": str(u.reasoning_tokens),
        "total_tokens": str(u.total_tokens),
        "cost_usd": f"{totals.cost_usd:.6f}" if totals.calls > totals.unpriced_calls else "unknown",
        "cost_known": str(totals.cost_known).lower(),
        "live_cost_usd": f"{totals.live_cost_usd:.6f}",
    }
    prices = run.meta.get("prices")
    if isinstance(prices, dict) and prices.get("version"):
        props["genai_prices_version"] = str(prices["version"])
    for key in ("commit", "branch"):
        if run.meta.get(key):
            props[key] = str(run.meta[key])
    return props
