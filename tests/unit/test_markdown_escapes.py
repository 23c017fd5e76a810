"""The PR comment's text from the suite, judged by GitHub's own renderer (cmark-gfm): whatever a test
id, a model name or a message holds renders as typed — no emphasis, link, autolink, image, HTML,
table break or mention — and nothing is escaped where markdown would not have read markup."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# the one cell-escaping function every report table uses, judged cell by cell here
from pytest_tokenbudget.report.markup import literal as _text
from pytest_tokenbudget.units import count

cmarkgfm = pytest.importorskip("cmarkgfm")
from cmarkgfm.cmark import Options  # noqa: E402

_OPTIONS = Options.CMARK_OPT_UNSAFE  # GitHub keeps comments; what it sanitises later is not our job


def rendered_cell(text: str) -> str:
    """The HTML of one table cell holding ``_text(text)``, comments dropped."""
    page = cmarkgfm.github_flavored_markdown_to_html(f"| a |\n|---|\n| {_text(text)} |\n", options=_OPTIONS)
    cell = re.search(r"<td>(.*?)</td>", page, re.S)
    assert cell is not None, page
    return re.sub(r"<!-- -->", "", cell.group(1))


HOSTILE = [
    "**bold** _it_ *it* ~~gone~~ `code`",
    "[phish](https://evil.example) ![img](x.png)",
    "see https://evil.example/phish and www.evil.example and ftp://x.example",
    "<script>alert(1)</script> <b>b</b> &lt; &amp;",
    "ping @octocat and @org/team",
    "a | b | c",
    "# heading",
    "1. item",
    "- item",
    "> quote",
    "back\\slash \\*",
    "__init__ x_y_z _lead trail_",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_from_the_suite_renders_as_typed(text: str) -> None:
    cell = rendered_cell(text)
    assert "<" not in cell.replace("<br />", ""), cell  # no tag of any kind: no link, emphasis, code
    assert html.unescape(cell).strip() == " ".join(text.split())


ALPHABET = [*r"ab _*`[]()!#+-|~<>&@\:/.w1", "http://", "www.", "]("]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=30).map("".join))
def test_any_text_renders_as_typed(text: str) -> None:
    cell = rendered_cell(text)
    assert "<" not in cell, (text, cell)
    assert html.unescape(cell).strip() == " ".join(text.split()).strip()


@pytest.mark.parametrize(
    "text",
    [
        "usage +0.000300 USD (x)",
        "test_answer_looks_the_order_up[gpt-4o-mini]",
        "session budget exceeded: 1,200 tokens > 1,000 (input 1,000, output 200; gpt-4o ×1)",
        "cost 10% over #4417!",
    ],
)
def test_nothing_is_escaped_where_markdown_reads_no_markup(text: str) -> None:
    assert "\\" not in _text(text), _text(text)


def test_counts_read_as_words() -> None:
    assert [count(1, "call"), count(3, "call"), count(1_024, "test"), count(0, "test")] == [
        "1 call",
        "3 calls",
        "1,024 tests",
        "0 tests",
    ]
