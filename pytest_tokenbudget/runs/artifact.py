"""Reading and writing run artifacts: atomic writes, run metadata, JSON (de)serialisation."""

from __future__ import annotations

import json
import operator
import os
import platform
import secrets
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final

from ..model import ArtifactError, Run, Tally, TestUsage, Verdict
from ..model.fields import TALLY_FIELDS, TEST_HEAD_FIELDS, VERDICT_FIELDS, Field, Kind


def temp_beside(path: Path, suffix: str = ".tmp", tag: str = "") -> tuple[int, str]:
    """A new, empty file next to ``path`` (same directory, so a rename onto ``path`` is atomic):
    its descriptor and name.

    Created with mode 0666 less the umask, as ``open()`` creates files: artifacts are read by CI
    uploaders and other users of the runner (``tempfile.mkstemp`` would make them 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        name = str(path.parent / f".{path.name}.{tag}{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue


def write_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write ``text`` (or its pieces) to ``path`` via a temporary file and a rename: never half
    written."""
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            if isinstance(text, str):
                handle.write(text)
            else:
                handle.writelines(text)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not land before the bytes do
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Collections written one entry per line: fast to write and read (one compact ``json.dumps`` per
# entry), small, and a diff of two runs shows one changed line per changed test.
_ONE_PER_LINE = frozenset({"models", "providers", "files", "markers", "tests", "issues", "verdicts"})


def dump_run(run: Run) -> str:
    """The artifact's JSON text (see :func:`iter_run`)."""
    return "".join(iter_run(run))


def iter_run(run: Run) -> Iterator[str]:
    """The artifact's JSON text in pieces, to write as they come: small sections indented, big
    collections one entry per line (the text of a large run is tens of megabytes; it is never
    whole in memory when written with :func:`write_run`)."""
    yield "{\n"
    data = run.to_dict(tests=False)
    last = len(data) - 1
    for index, (key, value) in enumerate(data.items()):
        comma = ",\n" if index < last else "\n"
        head = f"  {_compact(key)}: "
        if key in _ONE_PER_LINE and value:
            if key == "tests":  # the big one: encoded from the entries, not their dicts
                entries = (f"    {_compact(nodeid)}: {encode_test(run.tests[nodeid])}" for nodeid in value)
                opening, closing = "{", "}"
            elif key == "verdicts":  # one per test under a per-test budget
                entries = (f"    {encode_verdict(verdict)}" for verdict in run.verdicts)
                opening, closing = "[", "]"
            elif isinstance(value, dict):
                entries = (f"    {_compact(k)}: {_compact(v)}" for k, v in value.items())
                opening, closing = "{", "}"
            else:
                entries = (f"    {_compact(v)}" for v in value)
                opening, closing = "[", "]"
            yield head + opening + "\n"
            separator = ""
            for entry in entries:
                yield separator + entry
                separator = ",\n"
            yield f"\n  {closing}{comma}"
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            yield head + text + comma
    yield "}\n"


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _compact(value: Any) -> str:
    return _COMPACT.encode(value)


# The encoders below write the records the artifact holds many of (a few tallies per test) by
# one ``%`` each into a template made here, once, from the model's declaration of their
# fields (model/fields.py): cheaper than building each record's dict and encoding it, and the same
# bytes (tests/equivalence/test_model.py holds them equal to ``_compact(x.to_dict())``).


def _slot(field: Field) -> str:
    return "%d" if field.kind is Kind.COUNT else "%s"  # money and flags arrive as their JSON text


def _tally_template(plain: bool) -> str:
    """``{"calls":%d,…}``, a slot per field of :data:`TALLY_FIELDS`; ``plain``: for a tally without
    caveats, whose rare fields are written as an empty tally has them."""
    empty = Tally()
    parts = [
        f"{_compact(f.name)}:{_compact(getattr(empty, f.name)) if plain and f.rare else _slot(f)}"
        for f in TALLY_FIELDS
    ]
    return "{" + ",".join(parts) + "}"


def _at(fields: Sequence[Field], kind: Kind) -> tuple[int, ...]:
    return tuple(index for index, f in enumerate(fields) if f.kind is kind)


_TALLY_JSON: Final = _tally_template(plain=False)
_TALLY_VALUES: Final = operator.attrgetter(*(f.name for f in TALLY_FIELDS))
_TALLY_MONEY_AT: Final = _at(TALLY_FIELDS, Kind.MONEY)
_TALLY_FLAGS_AT: Final = _at(TALLY_FIELDS, Kind.FLAG)
_PLAIN_FIELDS: Final = tuple(f for f in TALLY_FIELDS if not f.rare)
_PLAIN_TALLY_JSON: Final = _tally_template(plain=True)
"""A tally without caveats (almost every one): fewer numbers to format."""
_PLAIN_TALLY_VALUES: Final = operator.attrgetter(*(f.name for f in _PLAIN_FIELDS))
_PLAIN_TALLY_MONEY_AT: Final = _at(_PLAIN_FIELDS, Kind.MONEY)


def encode_tally(tally: Tally) -> str:
    """``_compact(tally.to_dict())``, fast."""
    if (tally.cost_usd + tally.live_cost_usd) * 0.0 != 0.0:  # NaN or infinite: JSON spells those its own way
        return _compact(tally.to_dict())
    if tally.caveats is None:
        row = list(_PLAIN_TALLY_VALUES(tally))
        template, money_at = _PLAIN_TALLY_JSON, _PLAIN_TALLY_MONEY_AT
    else:
        row = list(_TALLY_VALUES(tally))
        template, money_at = _TALLY_JSON, _TALLY_MONEY_AT
        for index in _TALLY_FLAGS_AT:
            row[index] = "true" if row[index] else "false"
    for index in money_at:
        row[index] = _money(row[index])
    return template % tuple(row)


_MONEY: dict[float, str] = {}


def _money(value: float) -> str:
    """``repr(round(value, 10))``, remembered: amounts repeat (a tally's cost and its live or
    replayed part, one call's price …), and rounding one takes a decimal conversion each way."""
    if type(value) is not float:  # an int: 1 == 1.0 as keys, not in print
        return repr(round(value, 10))
    if not value:
        return repr(value)  # 0.0 or -0.0 (rounding keeps the sign): equal as keys, not in print
    text = _MONEY.get(value)
    if text is None:
        text = repr(round(value, 10))
        if len(_MONEY) < 10_000:
            _MONEY[value] = text
    return text


_TEST_HEAD_JSON: Final = "{" + ",".join(f"{_compact(name)}:%s" for name in TEST_HEAD_FIELDS)
_TEST_HEAD_VALUES: Final = operator.attrgetter(*TEST_HEAD_FIELDS)


def encode_test(entry: TestUsage) -> str:
    """``_compact(entry.to_dict())``, fast: a breakdown written as the test's total is (one phase,
    one model: most tests) reuses the total's text."""
    total = entry.total
    if not total.calls:
        return _compact(entry.to_dict())
    whole = encode_tally(total)
    head = _TEST_HEAD_JSON % tuple(map(_scalar, _TEST_HEAD_VALUES(entry)))
    if entry.markers:
        head += ',"markers":' + _compact(list(entry.markers))
    phases, models = _breakdown(entry.phases, total, whole), _breakdown(entry.models, total, whole)
    text = f'{head},{whole[1:-1]},"phases":{phases},"models":{models}'
    if entry.anatomy:
        text += ',"anatomy":' + _compact(dict(sorted(entry.anatomy.items())))
    if entry.context:
        text += ',"context":' + _compact(entry.context)
    if entry.stale:
        text += ',"stale":' + _compact(entry.stale)
    return text + "}"


def _breakdown(tallies: Mapping[str, Tally], total: Tally, whole: str) -> str:
    """A test's tallies by phase or model as a JSON object, keys sorted."""
    if len(tallies) == 1:  # most tests: no sort, no join
        for name, tally in tallies.items():
            return "{" + _part(name, tally, total, whole) + "}"
    return "{" + ",".join([_part(name, tallies[name], total, whole) for name in sorted(tallies)]) + "}"


_KEYS: dict[str, str] = {}  # phase and model names as JSON strings: a run has few of them


def _part(name: str, tally: Tally, total: Tally, whole: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = _compact(name)
        if len(_KEYS) < 10_000:
            _KEYS[name] = key
    return f"{key}:{whole if _written_alike(tally, total) else encode_tally(tally)}"


def _written_alike(tally: Tally, total: Tally) -> bool:
    """Whether ``tally`` is written exactly as ``total`` is: equal, and with amounts written alike
    (``==`` holds between 0.0 and -0.0, and 1 and 1.0, whose texts differ). Comparing is cheaper
    than encoding."""
    return (
        tally == total
        and _money(tally.cost_usd) == _money(total.cost_usd)
        and _money(tally.live_cost_usd) == _money(total.live_cost_usd)
    )


_VERDICT_JSON: Final = "{" + ",".join(f"{_compact(name)}:%s" for name in VERDICT_FIELDS) + "}"
_VERDICT_VALUES: Final = operator.attrgetter(*VERDICT_FIELDS)


def encode_verdict(verdict: Verdict) -> str:
    """``_compact(verdict.to_dict())``, fast: a per-test budget gives every test a verdict."""
    return _VERDICT_JSON % tuple(map(_scalar, _VERDICT_VALUES(verdict)))


def _scalar(value: Any) -> str:
    """``_compact(value)``, fast for a string, a finite number and None."""
    if isinstance(value, str):  # a StrEnum's value too
        return encode_basestring(value)
    kind = type(value)
    if kind is int or (kind is float and value - value == 0.0):  # not NaN or infinite
        return repr(value)
    return "null" if value is None else _compact(value)


def write_run(path: Path, run: Run) -> None:
    write_atomic(path, iter_run(run))


def load_run(path: Path) -> Run:
    """Read an artifact; any problem is an :class:`ArtifactError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from exc
    return Run.from_dict(data, source=str(path))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def git_info(root: Path) -> dict[str, str]:
    """Commit and branch: from CI variables when present, else from git (never fails)."""
    commit = os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA") or ""
    branch = (
        os.environ.get("GITHUB_HEAD_REF")
        or os.environ.get("GITHUB_REF_NAME")
        or os.environ.get("CI_COMMIT_REF_NAME")
        or ""
    )
    if not commit or not branch:  # one git process for both
        found = _git(root, "rev-parse", "HEAD", "--abbrev-ref", "HEAD").splitlines()
        if len(found) == 2:
            commit = commit or found[0]
            branch = branch or (found[1] if found[1] != "HEAD" else "")
    info = {}
    if commit:
        info["commit"] = commit
    if branch:
        info["branch"] = branch
    return info


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(terse=True)}
