"""Token counts for text and whole request bodies, with tiktoken when it can be had offline.

* The encoding follows the model: ``o200k_base`` for gpt-4o / gpt-4.1 / gpt-4.5 / gpt-5 / o1 / o3 /
  o4 (and chatgpt-4o, fine-tunes of those), ``cl100k_base`` for gpt-4 / gpt-3.5 / text-embedding-3 /
  ada-002. Any other model (claude, gemini, llama, mistral, …) is counted with ``o200k_base`` as an
  approximation and says so: ``method = "approx:o200k_base"``. Exact counts say
  ``method = "tiktoken:<encoding>"``.
* tiktoken is imported lazily and each encoding is loaded once per process, under a lock. The
  encoding file is looked up where tiktoken caches it (``TIKTOKEN_CACHE_DIR``, then
  ``DATA_GYM_CACHE_DIR``, then ``<tmp>/data-gym-cache``) and its sha256 is checked first. A missing
  file is downloaded once, with a short timeout, unless ``TOKENBUDGET_OFFLINE=1``.
* When tiktoken is not installed or an encoding cannot be had, counts fall back to the heuristic
  ``ceil(len(text.encode("utf-8")) / 4)`` with ``method = "heuristic"``; :func:`notices` then holds
  one line saying why, which the plugin prints once in its summary. Nothing here raises for that,
  and a failed load is never retried.

Request estimates follow OpenAI's documented chat arithmetic — 3 tokens of framing per message plus
the role, 1 more for a ``name``, 3 for priming the reply — and the cookbook's approximation for
function schemas. Responses and Anthropic bodies reuse those rules; every such estimate is
approximate and its ``notes`` say where.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import ast

__all__ = [
    "RequestEstimate",
    "TokenCount",
    "count",
    "detect_api",
    "encoding_for_model",
    "estimate_output",
    "estimate_request",
    "heuristic_tokens",
    "notices",
    "reset",
    "status",
]

O200K: Final = "o200k_base"
CL100K: Final = "cl100k_base"
HEURISTIC: Final = "heuristic"
OFFLINE_ENV: Final = "TOKENBUDGET_OFFLINE"
DOWNLOAD_TIMEOUT: Final = 5.0
"""Seconds for each network step of the one download attempt per encoding."""
ENCODINGS_URL_ENV: Final = "TOKENBUDGET_ENCODINGS_URL"
"""A base URL serving ``<name>.tiktoken`` files (a mirror), fetched instead of tiktoken's own
address; the file must still have the sha256 tiktoken declares."""

# Run by a separate interpreter (-I: no PYTHONPATH, no user site): the code under test's HTTP
# interceptors (vcrpy, respx, socket blockers) never see the plugin's own download, a cassette
# being recorded never holds it, and a replaying one cannot refuse it.
_FETCH: Final = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as response:\n"
    "    sys.stdout.buffer.write(response.read())\n"
)

# Used only when tiktoken's own declarations (tiktoken_ext/openai_public.py) cannot be read.
_KNOWN_BLOBS: Final[dict[str, tuple[str, str]]] = {
    CL100K: (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    O200K: (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

_O200K_MODEL = re.compile(r"^(?:gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|chatgpt-4o|o[134])(?:$|[-.:_ ])")
_CL100K_MODEL = re.compile(
    r"^(?:gpt-4|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002|davinci-002|babbage-002)"
    r"(?:$|[-.:_ ])"
)
_PROVIDER_PREFIX = re.compile(r"^(?:[\w.-]+/)+")  # litellm "openai/gpt-4o", "azure/…", "openrouter/x/y"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A token count and how it was obtained (``tiktoken:<enc>``, ``approx:<enc>`` or ``heuristic``)."""

    tokens: int
    method: str

    @property
    def exact(self) -> bool:
        return self.method.startswith("tiktoken:")


@dataclass(frozen=True, slots=True)
class RequestEstimate:
    """Estimated input tokens of one request body, with a breakdown that adds up to ``total``.

    ``system`` and ``messages`` (by role) count content only; ``overhead`` holds the per-message
    framing, reply priming and any provider tool prompt; ``attachments_unknown`` counts parts
    that cannot be tokenised here (images, files, audio, built-in tools, encrypted reasoning).
    """

    api: str
    model: str
    method: str
    total: int
    system: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    tools: int = 0
    overhead: int = 0
    attachments_unknown: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "model": self.model,
            "method": self.method,
            "total": self.total,
            "system": self.system,
            "messages": dict(self.messages),
            "tools": self.tools,
            "overhead": self.overhead,
            "attachments_unknown": self.attachments_unknown,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- model → encoding


def encoding_for_model(model: str | None) -> tuple[str, bool]:
    """``(encoding name, exact)`` for a model name; unknown and non-OpenAI models → ``(o200k, False)``."""
    name = (model or "").strip().lower()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    name = _PROVIDER_PREFIX.sub("", name)
    if _O200K_MODEL.match(name):
        return O200K, True
    if _CL100K_MODEL.match(name):
        return CL100K, True
    return O200K, False


# --------------------------------------------------------------------------- loading


class _Loader:
    """Loads each encoding at most once per process; remembers failures and why."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encodings: dict[str, Any] = {}  # name -> tiktoken.Encoding | None (failed)
        self._status: dict[str, str] = {}
        self._notices: list[str] = []

    def get(self, name: str) -> Any:
        try:
            return self._encodings[name]  # fast path, no lock: dict reads are atomic
        except KeyError:
            pass
        with self._lock:
            if name not in self._encodings:
                encoding, reason = _load(name)
                self._encodings[name] = encoding
                if encoding is None:
                    self._status[name] = f"{HEURISTIC}: {reason}"
                    notice = (
                        f"token estimates for {name} models use a heuristic (ceil(UTF-8 bytes / 4)): "
                        f"{reason}; pre-seed TIKTOKEN_CACHE_DIR for exact counts "
                        "(README: 'Tokenizer offline in CI')"
                    )
                    if notice not in self._notices:
                        self._notices.append(notice)
                else:
                    self._status[name] = "tiktoken"
            return self._encodings[name]

    def clear(self) -> None:
        with self._lock:
            self._encodings.clear()
            self._status.clear()
            self._notices.clear()

    def status(self) -> dict[str, str]:
        with self._lock:
            return dict(self._status)

    def notices(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._notices)


_loader = _Loader()


def warm(names: Iterable[str] = ("o200k_base", "cl100k_base")) -> None:
    """Load these encodings now (or settle on the heuristic), before an event loop needs them."""
    for name in names:
        _loader.get(name)


def status() -> dict[str, str]:
    """Encodings loaded so far: ``"tiktoken"`` or ``"heuristic: <reason>"``."""
    return _loader.status()


def notices() -> tuple[str, ...]:
    """One line per encoding that fell back to the heuristic (empty when all counts are exact)."""
    return _loader.notices()


def reset() -> None:
    """Forget loaded encodings and notices (tests; after changing ``TIKTOKEN_CACHE_DIR``)."""
    _loader.clear()


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def cache_dir() -> str:
    """Where tiktoken caches encoding files (same rules as ``tiktoken.load.read_file_cached``)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    import tempfile

    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def cache_file_name(url: str) -> str:
    """tiktoken's cache key for a blob: the sha1 of its URL."""
    return hashlib.sha1(url.encode()).hexdigest()


def declared_blob(name: str) -> tuple[str, str]:
    """``(url, sha256)`` tiktoken declares for an encoding, read from its source without running it."""
    import ast

    spec = importlib.util.find_spec("tiktoken_ext.openai_public")
    if spec is not None and spec.origin:
        try:
            tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            tree = None
        if tree is not None:
            found = _blob_in_tree(tree, name)
            if found is not None:
                return found
    if name in _KNOWN_BLOBS:
        return _KNOWN_BLOBS[name]
    raise KeyError(f"unknown encoding {name!r}")


def _blob_in_tree(tree: ast.Module, name: str) -> tuple[str, str] | None:
    import ast

    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name == name):
            continue
        for call in ast.walk(node):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "load_tiktoken_bpe"):
                continue
            url = call.args[0] if call.args else None
            sha = next((k.value for k in call.keywords if k.arg == "expected_hash"), None)
            if (
                isinstance(url, ast.Constant)
                and isinstance(url.value, str)
                and isinstance(sha, ast.Constant)
                and isinstance(sha.value, str)
            ):
                return url.value, sha.value
    return None


def _load(name: str) -> tuple[Any, str]:
    """``(encoding, "")`` or ``(None, reason)``; touches the network at most once, with a timeout."""
    try:
        import tiktoken
    except ImportError:
        return None, "tiktoken is not installed (pip install 'pytest-tokenbudget[tokenizer]')"
    try:
        url, sha256 = declared_blob(name)
    except KeyError as exc:
        return None, str(exc)
    directory = cache_dir()
    if not directory:
        return None, "TIKTOKEN_CACHE_DIR is empty (tiktoken caching disabled)"
    path = Path(directory) / cache_file_name(url)
    if not _cached_ok(path, sha256):
        if _offline():
            return None, f"{name} is not in the tiktoken cache {directory} and {OFFLINE_ENV} is set"
        reason = _download(_mirrored(url), sha256, path)
        if reason:
            return None, reason
    try:
        return tiktoken.get_encoding(name), ""
    except (OSError, ValueError, KeyError) as exc:
        return None, f"tiktoken could not load {name} ({exc.__class__.__name__})"


def _cached_ok(path: Path, sha256: str) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == sha256


def _mirrored(url: str) -> str:
    """``url``, or the same file name under :data:`ENCODINGS_URL_ENV` when that is set."""
    mirror = os.environ.get(ENCODINGS_URL_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if mirror else url


def _download(url: str, sha256: str, path: Path) -> str:
    """Fetch one encoding file into the cache (in a separate interpreter, see :data:`_FETCH`);
    ``""`` on success, else the reason."""
    import subprocess

    try:
        fetched = subprocess.run(
            [sys.executable, "-I", "-c", _FETCH, url, str(DOWNLOAD_TIMEOUT)],
            capture_output=True,
            timeout=4 * DOWNLOAD_TIMEOUT + 10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the download of {url} failed ({exc.__class__.__name__}) and it is not cached"
    if fetched.returncode != 0:
        last = (fetched.stderr.decode("utf-8", "replace").strip().splitlines() or ["error"])[-1]
        error = last.split(":", 1)[0].rsplit(".", 1)[-1] or "error"  # "urllib.error.URLError: …"
        return f"the download of {url} failed ({error}) and it is not cached"
    data = fetched.stdout
    if hashlib.sha256(data).hexdigest() != sha256:
        return f"the download of {url} did not match tiktoken's expected sha256"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        return f"could not write the tiktoken cache {path.parent} ({exc.__class__.__name__})"
    return ""


# --------------------------------------------------------------------------- counting


def heuristic_tokens(text: str) -> int:
    """The fallback: one token per 4 UTF-8 bytes, rounded up."""
    return math.ceil(len(text.encode("utf-8", errors="replace")) / 4)


class _Tokens:
    """Counts text for one model: tiktoken when loaded (and ``exact`` is asked for), else the
    heuristic."""

    def __init__(self, model: str | None, *, exact: bool = True) -> None:
        self.encoding_name, exact_encoding = encoding_for_model(model)
        self._encoding = _loader.get(self.encoding_name) if exact else None
        if self._encoding is None:
            self.method = HEURISTIC
        else:
            self.method = f"{'tiktoken' if exact_encoding else 'approx'}:{self.encoding_name}"

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        if self._encoding is None:
            return heuristic_tokens(text)
        return len(self._encoding.encode_ordinary(text))


def count(text: str, model: str | None = None) -> TokenCount:
    """Tokens in ``text`` for ``model`` (special-token markers are counted as plain text)."""
    tokens = _Tokens(model)
    return TokenCount(tokens(text), tokens.method)


def estimate_output(text: str, model: str | None = None) -> TokenCount:
    """Tokens of a completion's text, e.g. a stream that ended without a usage chunk."""
    return count(text, model)


# --------------------------------------------------------------------------- request bodies

_API_ALIASES: Final = {
    "chat": "openai.chat",
    "chat.completions": "openai.chat",
    "openai.chat": "openai.chat",
    "responses": "openai.responses",
    "openai.responses": "openai.responses",
    "messages": "anthropic.messages",
    "anthropic": "anthropic.messages",
    "anthropic.messages": "anthropic.messages",
    "embeddings": "openai.embeddings",
    "openai.embeddings": "openai.embeddings",
}
APIS: Final = ("openai.chat", "openai.responses", "anthropic.messages", "openai.embeddings")

MESSAGE_FRAMING: Final = 3  # <|start|>{role}<|message|> … <|end|>, per OpenAI's cookbook
REPLY_PRIMING: Final = 3  # <|start|>assistant<|message|>
NAME_EXTRA: Final = 1
# Anthropic documents the tool-use system prompt it adds (Claude 3.7 / 4 family).
ANTHROPIC_TOOL_PROMPT: Final = {"auto": 346, "none": 346, "any": 313, "tool": 313}

_NOTE_FRAMING = "per-message framing follows OpenAI's documented chat rules (approximate outside chat)"
_NOTE_TOOLS = "tool schemas counted with OpenAI's cookbook approximation"


def detect_api(body: Mapping[str, Any], model: str | None = None) -> str:
    """Which API a request body is for, from its shape (and the model name when ambiguous)."""
    name = _PROVIDER_PREFIX.sub("", str(model or body.get("model") or "").lower())
    if "messages" in body:
        anthropic = name.startswith("claude") or "system" in body or "anthropic_version" in body
        return "anthropic.messages" if anthropic else "openai.chat"
    if "input" in body:
        return "openai.embeddings" if "embedding" in name else "openai.responses"
    raise ValueError("not a recognised request body: expected 'messages' or 'input'")


def estimate_request(
    api: str, body: Mapping[str, Any], model: str | None = None, *, exact: bool = True
) -> RequestEstimate:
    """Estimate the input tokens of ``body`` sent to ``api`` (``openai.chat``, ``openai.responses``,
    ``anthropic.messages``, ``openai.embeddings`` or their short names) for ``model``
    (default: ``body["model"]``); ``exact=False`` counts ~4 bytes a token and never loads tiktoken."""
    kind = _API_ALIASES.get(api.strip().lower())
    if kind is None:
        raise ValueError(f"unknown api {api!r}: expected one of {', '.join(APIS)}")
    model_name = str(model or body.get("model") or "")
    acc = _Accumulator(_Tokens(model_name, exact=exact))
    if kind == "openai.chat":
        _chat(acc, body)
    elif kind == "openai.responses":
        _responses(acc, body)
    elif kind == "anthropic.messages":
        _anthropic(acc, body)
    else:
        _embeddings(acc, body)
    return acc.result(kind, model_name)


def parse_source(text: str) -> dict[str, Any] | None:
    """The request body in ``text`` when it is a JSON object with ``messages`` or ``input``, else None."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or a JSON bomb: read as a plain prompt
        return None
    if isinstance(data, dict) and ("messages" in data or "input" in data):
        return data
    return None


def estimate_source(text: str, model: str | None = None, api: str | None = None) -> RequestEstimate:
    """Estimate a request body given as JSON text, or a plain prompt sent as one user message."""
    body = parse_source(text)
    if body is None:
        anthropic = _PROVIDER_PREFIX.sub("", (model or "").lower()).startswith("claude")
        body = {"messages": [{"role": "user", "content": text}]}
        api = api or ("anthropic.messages" if anthropic else "openai.chat")
        estimate = estimate_request(api, body, model)
        notes = (*estimate.notes, "plain prompt: counted as one user message")
        return RequestEstimate(**{**estimate.to_dict(), "notes": notes})
    return estimate_request(api or detect_api(body, model), body, model)


class _Accumulator:
    def __init__(self, tokens: _Tokens) -> None:
        self.tok = tokens
        self.system = 0
        self.messages: dict[str, int] = {}
        self.tools = 0
        self.overhead = 0
        self.unknown = 0
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def add(self, role: str, tokens: int) -> None:
        if role in {"system", "developer"}:
            self.system += tokens
        else:
            self.messages[role] = self.messages.get(role, 0) + tokens

    def frame(self, role: str) -> None:
        self.overhead += MESSAGE_FRAMING + self.tok(role)
        self.note(_NOTE_FRAMING)

    def result(self, api: str, model: str) -> RequestEstimate:
        if self.unknown:
            self.note(f"{self.unknown} part(s) not counted (images, files, audio, built-in tools, …)")
        total = self.system + sum(self.messages.values()) + self.tools + self.overhead
        return RequestEstimate(
            api=api,
            model=model,
            method=self.tok.method,
            total=total,
            system=self.system,
            messages=dict(self.messages),
            tools=self.tools,
            overhead=self.overhead,
            attachments_unknown=self.unknown,
            notes=tuple(self.notes),
        )


def _text(value: Any) -> str:
    """A string value, or compact JSON for anything structured (tool arguments, outputs)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _items(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, list):
        return (item for item in value if isinstance(item, dict))
    return ()


# ----- OpenAI chat completions

_CHAT_TEXT_PARTS: Final = {"text": "text", "refusal": "refusal"}


def _chat(acc: _Accumulator, body: Mapping[str, Any]) -> None:
    for message in _items(body.get("messages")):
        role = str(message.get("role") or "user")
        acc.frame(role)
        tokens = _chat_content(acc, message.get("content"))
        name = message.get("name")
        if isinstance(name, str) and name:
            acc.overhead += acc.tok(name) + NAME_EXTRA
        calls = list(_items(message.get("tool_calls")))
        if isinstance(message.get("function_call"), dict):
            calls.append({"function": message["function_call"]})
        for call in calls:
            function = call.get("function")
            if not isinstance(function, dict):
                function = call
            tokens += acc.tok(_text(function.get("name"))) + acc.tok(_text(function.get("arguments")))
            acc.note("tool calls counted as name + arguments (approximate)")
        acc.add(role, tokens)
    acc.overhead += REPLY_PRIMING
    functions = [t["function"] for t in _items(body.get("tools")) if isinstance(t.get("function"), dict)]
    functions += list(_items(body.get("functions")))
    acc.unknown += sum(1 for t in _items(body.get("tools")) if not isinstance(t.get("function"), dict))
    acc.tools += _function_schemas(acc, functions)


def _chat_content(acc: _Accumulator, content: Any) -> int:
    if isinstance(content, str):
        return acc.tok(content)
    tokens = 0
    for part in _items(content):
        key = _CHAT_TEXT_PARTS.get(str(part.get("type")))
        if key is not None and isinstance(part.get(key), str):
            tokens += acc.tok(part[key])
        else:
            acc.unknown += 1
    return tokens


# Cookbook ("How to count tokens with tiktoken", function calling): per-encoding constants.
_FUNC_INIT: Final = {O200K: 7, CL100K: 10}
_PROP_INIT: Final = 3
_PROP_KEY: Final = 3
_ENUM_INIT: Final = -3
_ENUM_ITEM: Final = 3
_FUNC_END: Final = 12


def _function_schemas(acc: _Accumulator, functions: list[dict[str, Any]]) -> int:
    """OpenAI's cookbook approximation for function definitions (nested objects recurse)."""
    if not functions:
        return 0
    acc.note(_NOTE_TOOLS)
    tokens = 0
    for function in functions:
        tokens += _FUNC_INIT.get(acc.tok.encoding_name, 7)
        description = _text(function.get("description")).removesuffix(".")
        tokens += acc.tok(f"{_text(function.get('name'))}:{description}")
        parameters = function.get("parameters")
        if isinstance(parameters, dict):
            tokens += _properties(acc, parameters)
    return tokens + _FUNC_END


def _properties(acc: _Accumulator, schema: Mapping[str, Any]) -> int:
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return 0
    tokens = _PROP_INIT
    for key, spec in properties.items():
        tokens += _PROP_KEY
        if not isinstance(spec, dict):
            continue
        enum = spec.get("enum")
        if isinstance(enum, list):
            tokens += _ENUM_INIT
            for item in enum:
                tokens += _ENUM_ITEM + acc.tok(_text(item))
        kind = spec.get("type")
        kind_text = "|".join(map(str, kind)) if isinstance(kind, list) else _text(kind)
        description = _text(spec.get("description")).removesuffix(".")
        tokens += acc.tok(f"{key}:{kind_text}:{description}")
        tokens += _properties(acc, spec)
        items = spec.get("items")
        if isinstance(items, dict):
            tokens += _properties(acc, items)
    return tokens


# ----- OpenAI Responses

_RESPONSES_TEXT_PARTS: Final = {
    "input_text": "text",
    "output_text": "text",
    "text": "text",
    "refusal": "refusal",
}


def _responses(acc: _Accumulator, body: Mapping[str, Any]) -> None:
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        acc.frame("system")
        acc.add("system", acc.tok(instructions))
    data = body.get("input")
    if isinstance(data, str):
        acc.frame("user")
        acc.add("user", acc.tok(data))
    for item in _items(data):
        kind = item.get("type")
        if "role" in item and kind in (None, "message"):
            role = str(item.get("role") or "user")
            acc.frame(role)
            acc.add(role, _responses_content(acc, item.get("content")))
        elif kind == "function_call":
            acc.frame("assistant")
            acc.add("assistant", acc.tok(_text(item.get("name"))) + acc.tok(_text(item.get("arguments"))))
        elif kind == "function_call_output":
            acc.frame("tool")
            acc.add("tool", acc.tok(_text(item.get("output"))))
        else:
            acc.unknown += 1  # reasoning (encrypted), item references, built-in tool calls
    if body.get("previous_response_id"):
        acc.note("previous_response_id: earlier turns held by the server are not counted")
    acc.overhead += REPLY_PRIMING
    functions: list[dict[str, Any]] = []
    for tool in _items(body.get("tools")):
        if tool.get("type") == "function":
            functions.append(tool)
        else:
            acc.unknown += 1
    acc.tools += _function_schemas(acc, functions)


def _responses_content(acc: _Accumulator, content: Any) -> int:
    if isinstance(content, str):
        return acc.tok(content)
    tokens = 0
    for part in _items(content):
        key = _RESPONSES_TEXT_PARTS.get(str(part.get("type")))
        if key is not None and isinstance(part.get(key), str):
            tokens += acc.tok(part[key])
        else:
            acc.unknown += 1
    return tokens


# ----- Anthropic messages


def _anthropic(acc: _Accumulator, body: Mapping[str, Any]) -> None:
    if acc.tok.method != HEURISTIC:
        acc.note("Anthropic's tokenizer is not public: o200k_base counts are an approximation")
    system = body.get("system")
    if system:
        acc.frame("system")
        acc.add("system", _anthropic_blocks(acc, system))
    for message in _items(body.get("messages")):
        role = str(message.get("role") or "user")
        acc.frame(role)
        acc.add(role, _anthropic_blocks(acc, message.get("content")))
    acc.overhead += REPLY_PRIMING
    tools = list(_items(body.get("tools")))
    custom = [t for t in tools if "input_schema" in t or t.get("type") == "custom"]
    acc.unknown += len(tools) - len(custom)
    if custom:
        acc.tools += sum(acc.tok(_text(t)) for t in custom)
        choice = body.get("tool_choice")
        kind = str(choice.get("type", "auto")) if isinstance(choice, dict) else "auto"
        acc.overhead += ANTHROPIC_TOOL_PROMPT.get(kind, ANTHROPIC_TOOL_PROMPT["auto"])
        acc.note("tool definitions counted as compact JSON, plus Anthropic's documented tool-use prompt")


def _anthropic_blocks(acc: _Accumulator, content: Any) -> int:
    if isinstance(content, str):
        return acc.tok(content)
    tokens = 0
    for block in _items(content):
        kind = block.get("type")
        if kind == "text":
            tokens += acc.tok(_text(block.get("text")))
        elif kind == "thinking":
            tokens += acc.tok(_text(block.get("thinking")))
        elif kind == "tool_use":
            tokens += acc.tok(_text(block.get("name"))) + acc.tok(_text(block.get("input")))
        elif kind == "tool_result":
            tokens += _anthropic_blocks(acc, block.get("content"))
        elif (
            kind == "document"
            and isinstance(block.get("source"), dict)
            and block["source"].get("type") == "text"
        ):
            tokens += acc.tok(_text(block["source"].get("data")))
        else:
            acc.unknown += 1  # image, pdf document, redacted_thinking, server tool results
    return tokens


# ----- OpenAI embeddings


def _embeddings(acc: _Accumulator, body: Mapping[str, Any]) -> None:
    data = body.get("input")
    values = data if isinstance(data, list) else [data]
    if values and all(isinstance(v, int) for v in values):
        values = [values]  # one pre-tokenised input
    tokens = 0
    for value in values:
        if isinstance(value, str):
            tokens += acc.tok(value)
        elif isinstance(value, list):
            tokens += len(value)  # already token ids
    acc.add("input", tokens)
