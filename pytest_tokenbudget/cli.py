"""The ``tokenbudget`` command: works on JSON run artifacts, with the plugin's own code.

Each subcommand is a pair of functions here: ``_add_<name>(subparsers)`` declares it and
``_cmd_<name>(args) -> int`` runs it. Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .model import ArtifactError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenbudget", description="Render, compare and check pytest-tokenbudget run artifacts."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_show,
        _add_report,
        _add_compare,
        _add_estimate,
        _add_merge,
        _add_check,
        _add_history,
        _add_export_otel,
    ):
        add(subparsers)
    for add in (_add_suggest, _add_reprice):  # issue 25
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ArtifactError as exc:
        print(f"tokenbudget: {exc}", file=sys.stderr)
        return 2
    except _Unwritable as exc:
        print(f"tokenbudget: {exc}", file=sys.stderr)
        return 2
    except RecursionError:  # JSON nested deeper than the interpreter allows
        print(f"tokenbudget: {args.command}: input is nested too deeply to read", file=sys.stderr)
        return 2


class _Unwritable(Exception):
    """An output path that cannot be written: one line, exit 2."""


def _write(write: Callable[[Path, Any], None], path: Path, content: Any) -> None:
    """``write(path, content)``; an OSError (a directory, a read-only folder, a NUL) is one line."""
    try:
        write(path, content)
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _Unwritable(f"{path}: cannot be written: {reason}") from None


def _add_show(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("show", help="print the terminal summary of a run artifact")
    parser.add_argument("run", metavar="RUN.json")
    parser.add_argument("-v", "--verbose", action="store_true", help="every test, every issue")
    parser.set_defaults(func=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report.terminal import render
    from .runs.artifact import load_run

    run = load_run(Path(args.run))
    for line in render(run, verbose=args.verbose):
        print(line.text)
    return 0


_FORMATS = ("markdown", "junit", "csv", "json", "table", "html")


def _add_report(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report", help="render a run artifact as markdown, JUnit XML, CSV, JSON, a table or HTML"
    )
    parser.add_argument("run", metavar="RUN.json")
    parser.add_argument("--format", "-f", choices=_FORMATS, default="markdown")
    parser.add_argument(
        "-o", "--output", metavar="PATH", help="write here (atomically) instead of standard output"
    )
    parser.add_argument(
        "--top", type=int, default=10, help="rows in the tables of tests and models (default 10)"
    )
    parser.add_argument(
        "--history",
        metavar="DIR",
        help="the trend over the runs saved in DIR (history-dir): a chart in html, a sparkline in markdown",
    )
    parser.add_argument(
        "--html-url",
        metavar="URL",
        help="markdown: link to the HTML report here (default: $TOKENBUDGET_HTML_URL)",
    )
    parser.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .runs.artifact import dump_run, load_run, write_atomic

    run = load_run(Path(args.run))
    if args.format == "markdown":
        import os

        from .report.markdown import render as markdown
        from .report.writer import HTML_URL_ENV

        trend = []
        if args.history:
            from .report.trend import recent

            trend = recent(Path(args.history), run)
        html_url = args.html_url or os.environ.get(HTML_URL_ENV) or None
        text = markdown(run, top=args.top, trend=trend, html_url=html_url)
    elif args.format == "junit":
        from .report.junit import render as junit

        text = junit(run)
    elif args.format == "csv":
        from .report.export import render_csv

        text = render_csv(run)
    elif args.format == "json":
        text = dump_run(run)
    elif args.format == "html":
        from .report import html

        text = html.render(run, trend=html.load_trend(run, Path(args.history) if args.history else None))
    else:
        from .report.terminal import render as table

        text = "\n".join(line.text for line in table(run, verbose=True, top=args.top)) + "\n"
    if args.output:
        _write(write_atomic, Path(args.output), text)
        print(f"{args.format} report: {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _add_compare(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare a run with a baseline: deltas per test, model and cost"
    )
    parser.add_argument("base", metavar="BASE.json", help="the baseline (a file, or git:REF[:PATH])")
    parser.add_argument("head", metavar="HEAD.json", help="the run to judge")
    parser.add_argument("--format", "-f", choices=("table", "markdown", "json"), default="table")
    parser.add_argument(
        "--max-increase",
        action="append",
        default=[],
        metavar="RULE",
        help="10%%, test:25%%, cost:5%%, tokens:+5000",
    )
    parser.add_argument(
        "--min-tokens", type=int, default=1000, help="ignore %% growth of tests below N tokens"
    )
    parser.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .config import ConfigError, resolve
    from .model import Status
    from .pricing.prices import Pricer
    from .runs.artifact import load_run
    from .runs.baseline import compare, judge, load, parse_rules

    try:
        settings = resolve({}, {}, pyproject=None, root=Path.cwd())
        rules = parse_rules(tuple(args.max_increase), "--max-increase")
        loaded = load(args.base, settings)
    except ConfigError as exc:
        print(f"tokenbudget: {exc}", file=sys.stderr)
        return 2
    if loaded.run is None:
        print(f"tokenbudget: {loaded.note}", file=sys.stderr)
        return 2
    head = load_run(Path(args.head))
    comparison = compare(loaded.run, head, Pricer().cost_of)
    comparison["source"] = loaded.source
    verdicts = judge(comparison, rules, min_tokens=args.min_tokens, warn_at=settings.warn_at)
    if args.format == "json":
        print(json.dumps({"comparison": comparison, "verdicts": [v.to_dict() for v in verdicts]}, indent=2))
    elif args.format == "markdown":
        from .report.comparison import markdown_lines

        print("\n".join(markdown_lines(comparison)))
    else:
        from .report.comparison import terminal_lines

        print("\n".join(line.text for line in terminal_lines(comparison)).lstrip("\n"))
    for verdict in verdicts:
        if args.format != "json":
            print(f"{verdict.status}: {verdict.message}")
    return 1 if any(v.status == Status.EXCEEDED for v in verdicts) else 0


def _add_estimate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "estimate", help="estimate the input tokens (and cost) of a request body or prompt, offline"
    )
    parser.add_argument("source", nargs="?", default="-", metavar="FILE|-", help="JSON body or plain text")
    parser.add_argument("--model", action="append", default=[], metavar="M", help="repeat to compare")
    parser.add_argument("--api", metavar="API", help="openai.chat, openai.responses, anthropic.messages, …")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_cmd_estimate)


def _cmd_estimate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .tokens import tokenizer

    try:
        text = sys.stdin.read() if args.source == "-" else Path(args.source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"tokenbudget: cannot read {args.source}: {exc.__class__.__name__}", file=sys.stderr)
        return 2
    body = tokenizer.parse_source(text)
    models = args.model or ([str(body["model"])] if body and body.get("model") else [])
    if not models:
        print("tokenbudget: no model in the body: give --model", file=sys.stderr)
        return 2
    try:
        rows = [tokenizer.estimate_source(text, model, args.api).to_dict() for model in models]
    except ValueError as exc:
        print(f"tokenbudget: {exc}", file=sys.stderr)
        return 2
    for row in rows:
        row["input_cost_usd"] = _input_cost(row["model"], row["total"])
    if args.json:
        print(json.dumps({"estimates": rows, "notices": list(tokenizer.notices())}, indent=2))
        return 0
    head = ("model", "api", "method", "input", "system", "messages", "tools", "overhead", "unknown", "cost")
    table = [head] + [
        (
            r["model"], r["api"], r["method"], f"{r['total']:,}", f"{r['system']:,}",
            f"{sum(r['messages'].values()):,}", f"{r['tools']:,}", f"{r['overhead']:,}",
            str(r["attachments_unknown"]),
            "-" if r["input_cost_usd"] is None else f"${r['input_cost_usd']:.6f}",
        )
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for line in table:
        cells = zip(line, widths, strict=True)
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    for note in dict.fromkeys(n for r in rows for n in r["notes"]):
        print(f"note: {note}")
    for notice in tokenizer.notices():
        print(f"notice: {notice}")
    return 0


def _input_cost(model: str, tokens: int) -> float | None:
    """Input cost in USD through :mod:`.pricing.prices`, when it is there and knows the model."""
    try:
        from .pricing.prices import input_cost
    except ImportError:
        return None
    try:
        value = input_cost(model, tokens)
    except (KeyError, ValueError, LookupError):
        return None
    return None if value is None else float(value)


def _add_merge(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "merge", help="merge the run artifacts of a suite's shards (CI jobs) into one run"
    )
    parser.add_argument(
        "shards", nargs="+", metavar="SHARD.json", help="shard artifacts (and *.jsonl call logs), or folders"
    )
    parser.add_argument("-o", "--output", required=True, metavar="RUN.json", help="the merged run")
    parser.add_argument("--calls", metavar="CALLS.jsonl", help="stream the shards' call logs into one")
    parser.add_argument(
        "--duplicates",
        choices=("error", "keep-first", "keep-last"),
        default="error",
        help="a test found in two shards: refuse (default), or count the first / last shard's entry once",
    )
    parser.add_argument(
        "--expect", type=int, metavar="N", help="refuse unless exactly N shard artifacts are found"
    )
    parser.set_defaults(func=_cmd_merge)


def _cmd_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report.terminal import usage_sentence
    from .runs.artifact import write_run
    from .runs.merge import MergeError, find_inputs, load_shards, merge_call_logs, merge_runs

    artifacts, logs = find_inputs(args.shards)
    if logs and not args.calls:
        raise MergeError(f"{len(logs)} call logs (*.jsonl) given: name the merged log with --calls PATH")
    shards = load_shards(artifacts)
    merged = merge_runs(shards, duplicates=args.duplicates, expected=args.expect)
    if args.calls:
        if not logs:
            raise MergeError("--calls: no *.jsonl call log among the shards")
        lines = merge_call_logs(logs, Path(args.calls), merged, shards)
        print(f"merged {len(logs)} call logs, {lines:,} calls: {args.calls}")
    _write(write_run, Path(args.output), merged.run)
    for note in merged.notes:
        print(f"tokenbudget: {note}", file=sys.stderr)
    merged_shards, tests = len(merged.run.meta["merge"]["shards"]), sum(1 for _ in merged.run.iter_tests())
    totals = merged.run.totals()
    print(f"merged {merged_shards} shards, {tests:,} tests, {totals.calls:,} calls: {usage_sentence(totals)}")
    print(f"merged run: {args.output}")
    return 0


def _add_check(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="judge a (merged) run with the pyproject budgets and baseline thresholds; exit 1 on overrun",
    )
    parser.add_argument("run", metavar="RUN.json")
    parser.add_argument("--config", metavar="PYPROJECT", help="pyproject.toml (default: ./pyproject.toml)")
    for key, metavar, text in _CHECK_OPTIONS:
        parser.add_argument(f"--{key}", metavar=metavar, help=text, dest=key.replace("-", "_"))
    parser.add_argument(
        "--max-increase", action="append", metavar="RULE", help="baseline threshold (repeatable)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="every test, every issue")
    parser.set_defaults(func=_cmd_check)


_CHECK_OPTIONS = (
    ("baseline", "SOURCE", "compare with a baseline: a path, git:REF or git:REF:PATH"),
    ("mode", "fail|warn", "warn: report overruns, exit 0"),
    ("json", "PATH", "write the judged run artifact to PATH"),
    ("junit", "PATH", "write the JUnit XML report to PATH"),
    ("markdown", "PATH", "write the markdown report to PATH"),
    ("csv", "PATH", "write per-test usage as CSV to PATH"),
    ("html", "PATH", "write the self-contained HTML report to PATH"),
)


def _cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .check import EXIT_USAGE, check_file
    from .config import ConfigError
    from .runs.artifact import load_run

    run = load_run(Path(args.run))
    overrides = {key: getattr(args, key.replace("-", "_")) for key, _, _ in _CHECK_OPTIONS}
    overrides["max-increase"] = args.max_increase
    try:
        result = check_file(run, Path(args.config) if args.config else None, overrides)
    except ConfigError as exc:
        print(f"tokenbudget: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for line in result.lines(verbose=args.verbose):
        print(line)
    return result.exit_status


def _add_history(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "history", help="the trend of tokens and cost over runs kept with --token-budget-save-run"
    )
    parser.add_argument(
        "folder", nargs="?", metavar="DIR", help="saved runs (default: history-dir, .tokenbudget/runs)"
    )
    parser.add_argument("--last", type=int, metavar="N", help="only the last N runs")
    parser.add_argument("--branch", metavar="NAME", help="only runs of this branch")
    parser.add_argument("--svg", metavar="PATH", help="also draw tokens and cost as an SVG line chart")
    parser.set_defaults(func=_cmd_history)


def _cmd_history(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import ConfigError, find_pyproject, read_table, resolve
    from .runs.artifact import write_atomic
    from .runs.history import load_history, svg_chart, trend_lines

    if args.last is not None and args.last < 1:
        print("tokenbudget: --last must be at least 1", file=sys.stderr)
        return 2
    folder = Path(args.folder) if args.folder else None
    if folder is None:
        try:
            pyproject = find_pyproject(Path.cwd(), None)
            settings = resolve(read_table(pyproject), {}, pyproject=pyproject, root=Path.cwd())
        except ConfigError as exc:
            print(f"tokenbudget: {exc}", file=sys.stderr)
            return 2
        folder = settings.history_dir or Path(".tokenbudget/runs")
    history = load_history(folder, branch=args.branch)
    for reason in history.skipped:
        print(f"tokenbudget: skipped {reason}", file=sys.stderr)
    entries = history.entries
    if not entries:
        where = f"{folder} (branch {args.branch})" if args.branch else str(folder)
        print(f"tokenbudget: no saved runs in {where}", file=sys.stderr)
        return 1
    for line in trend_lines(entries, last=args.last):
        print(line)
    if args.svg:
        shown = entries[-args.last :] if args.last else entries
        title = f"LLM token use per run ({args.branch})" if args.branch else "LLM token use per run"
        _write(write_atomic, Path(args.svg), svg_chart(shown, title=title))
        print(f"chart: {args.svg}", file=sys.stderr)
    return 0


def _add_suggest(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "suggest", help="propose session and per-test budgets from saved runs, as a diff of pyproject.toml"
    )
    parser.add_argument(
        "runs", nargs="*", metavar="RUN.json|DIR", help="artifacts or folders (default: history-dir)"
    )
    parser.add_argument(
        "--config", metavar="PYPROJECT", help="the file to change (default: ./pyproject.toml)"
    )
    parser.add_argument(
        "--headroom", type=float, default=1.2, help="factor over the percentile (default 1.2)"
    )
    parser.add_argument("--percentile", type=float, default=95.0, help="of each test's runs (default 95)")
    parser.add_argument("--last", type=int, metavar="N", help="only the newest N runs of a folder")
    parser.add_argument("--write", action="store_true", help="apply the change to the file")
    parser.set_defaults(func=_cmd_suggest)


def _cmd_suggest(args: argparse.Namespace) -> int:
    from .config import ConfigError, read_table, resolve
    from .judge.budgets import Budgets
    from .runs.artifact import write_atomic
    from .runs.suggest import SuggestError, load_runs, propose, summary_lines, unified_diff, updated_pyproject

    pyproject = Path(args.config) if args.config else Path.cwd() / "pyproject.toml"
    try:
        before = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
        settings = resolve(
            read_table(pyproject if before else None), {}, pyproject=pyproject, root=pyproject.parent
        )
    except (OSError, ConfigError) as exc:
        print(f"tokenbudget: {exc}", file=sys.stderr)
        return 2
    sources = [Path(r) for r in args.runs] or [settings.history_dir or Path(".tokenbudget/runs")]
    for source in sources:
        if not source.exists():
            print(f"tokenbudget: {source}: no such file or folder", file=sys.stderr)
            return 2
    runs, notes = load_runs(sources)
    if args.last is not None:
        runs = runs[-max(args.last, 1) :]
    try:
        proposal = propose(runs, headroom=args.headroom, pct=args.percentile)
        after = updated_pyproject(before, proposal)
        check = resolve(_read_table_text(after), {}, pyproject=pyproject, root=pyproject.parent)
        Budgets.from_settings(check)  # what the plugin will read: a suggestion it cannot is a bug
    except (SuggestError, ConfigError) as exc:
        print(f"tokenbudget: {pyproject}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name != "tomlkit":
            raise
        print("tokenbudget suggest needs tomlkit: pip install 'pytest-tokenbudget[suggest]'", file=sys.stderr)
        return 2
    for line in [*notes, *summary_lines(proposal, headroom=args.headroom, pct=args.percentile)]:
        print(line, file=sys.stderr)
    if after == before:
        print(f"{pyproject.name} already holds these budgets", file=sys.stderr)
        return 0
    sys.stdout.write(unified_diff(before, after, pyproject.name))
    if args.write:
        _write(write_atomic, pyproject, after)
        print(f"written: {pyproject}", file=sys.stderr)
    return 0


def _add_reprice(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reprice", help="what a saved run would cost on other models (same tokens, today's prices)"
    )
    parser.add_argument("run", metavar="RUN.json")
    parser.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        metavar="FROM=TO",
        help="swap a model: gpt-4o=gpt-4o-mini, claude-sonnet-*=anthropic/claude-opus-4-1 (repeatable)",
    )
    parser.add_argument("--format", "-f", choices=("text", "markdown", "json"), default="text")
    parser.add_argument("--top", type=int, default=20, help="rows of the per-test table (default 20)")
    parser.add_argument("--config", metavar="PYPROJECT", help="its [tool.tokenbudget.prices] and aliases")
    parser.set_defaults(func=_cmd_reprice)


def _cmd_reprice(args: argparse.Namespace) -> int:
    import json

    from .config import ConfigError, find_pyproject, read_table, resolve
    from .pricing.prices import Pricer
    from .report.reprice import RepriceError, markdown_lines, parse_mappings, reprice, text_lines
    from .runs.artifact import load_run

    run = load_run(Path(args.run))
    try:
        pyproject = Path(args.config) if args.config else find_pyproject(Path.cwd(), None)
        settings = resolve(read_table(pyproject), {}, pyproject=pyproject, root=Path.cwd())
        result = reprice(run, parse_mappings(args.model), Pricer.from_settings(settings))
    except (ConfigError, RepriceError) as exc:
        print(f"tokenbudget: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        lines = (
            markdown_lines(result, top=args.top)
            if args.format == "markdown"
            else text_lines(result, top=args.top)
        )
        print("\n".join(lines))
    return 0


def _read_table_text(text: str) -> dict[str, Any]:
    """``[tool.tokenbudget]`` of a pyproject given as text."""
    import tomllib

    table = tomllib.loads(text).get("tool", {}).get("tokenbudget", {})
    return table if isinstance(table, dict) else {}


def _add_export_otel(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export-otel",
        help="send a run artifact (a merged sharded run, say) over OTLP, as --token-budget-otel does",
        description="Configured by the standard OTEL_EXPORTER_OTLP_* / OTEL_SERVICE_NAME / "
        "OTEL_RESOURCE_ATTRIBUTES variables. A saved run has no per-call times: it is sent as the "
        "session span and a span per test, without the per-call child spans.",
    )
    parser.add_argument("run", metavar="RUN.json")
    parser.set_defaults(func=_cmd_export_otel)


def _cmd_export_otel(args: argparse.Namespace) -> int:
    from .report.otel import export_otel_command

    return export_otel_command(Path(args.run))


if __name__ == "__main__":
    raise SystemExit(main())
