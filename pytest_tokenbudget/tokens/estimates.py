"""Estimates for calls whose response reports no usage: input from the request, output from the text.

A stream without a usage chunk, a mock without ``usage``, a proxy that strips it: the recorder keeps
a reference to the request and to what was received (no copy, no parse on the way) and calls
:func:`fill` only for such calls. The numbers come from :mod:`~pytest_tokenbudget.tokens.tokenizer` and the
call is marked ``estimated``. When the request cannot be read either (not JSON, a streamed upload,
an unknown shape), the call becomes ``unmetered``: it carries no tokens and budgets cannot trip on it.

Nothing here keeps prompt or completion text beyond the call to :func:`fill`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, TypeGuard

from ..model import Call, CallState, Usage
from ..providers.base import ParseError, load_json
from ..request_body import json_object, request_json

__all__ = [
    "InputEstimate",
    "estimate_input",
    "event_text",
    "fill",
    "output_text",
    "response_text",
]

_CHAT_SHAPED: Final = {"ollama.chat": "openai.chat", "cohere.chat": "openai.chat"}
"""APIs whose request bodies follow OpenAI's chat shape closely enough for its arithmetic."""
_TEXT_KEYS: Final = frozenset(
    {"text", "content", "prompt", "input", "inputs", "system", "inputText", "texts"}
)
"""Keys whose string values are prompt text in request shapes without a dedicated estimator."""


@dataclass(frozen=True, slots=True)
class InputEstimate:
    """Estimated input tokens of one request and how they were counted (``tiktoken:…`` etc.)."""

    tokens: int
    method: str
    exact: bool  # the model's own encoding and OpenAI's documented arithmetic, no unknown parts


# --------------------------------------------------------------------------- input


def estimate_input(api: str, body: Mapping[str, Any], model: str | None = None) -> InputEstimate | None:
    """Input tokens of a request body for ``api`` (None when the body holds no countable text)."""
    from .tokenizer import APIS, count, estimate_request

    target = _CHAT_SHAPED.get(api, api)
    if target in APIS:
        try:
            estimate = estimate_request(target, body, model)
        except ValueError:
            return None
        exact = (
            estimate.method.startswith("tiktoken:")
            and not estimate.tools
            and not estimate.attachments_unknown
            and target == api
        )
        return InputEstimate(estimate.total, estimate.method, exact)
    texts = list(_request_texts(api, body))
    if not texts:
        return None
    counted = count("\n".join(texts), model)
    return InputEstimate(counted.tokens, counted.method, False)


def _request_texts(api: str, body: Mapping[str, Any]) -> Iterable[str]:
    if api == "openai.completions":
        prompt = body.get("prompt")
        yield from ([prompt] if isinstance(prompt, str) else [p for p in _list(prompt) if isinstance(p, str)])
        return
    if api.startswith("gemini."):
        for key in ("systemInstruction", "system_instruction", "contents", "content", "requests", "tools"):
            if key in body:
                yield from _gemini_texts(body[key])
        return
    yield from _strings_under(body, _TEXT_KEYS, inside=False)


def _gemini_texts(value: Any) -> Iterable[str]:
    """Text parts, function declarations and calls of Gemini contents (recursively)."""
    if isinstance(value, list):
        for item in value:
            yield from _gemini_texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            elif key in ("functionDeclarations", "function_declarations", "functionCall", "functionResponse"):
                yield _compact(item)
            elif key not in ("inlineData", "inline_data", "fileData", "file_data"):
                yield from _gemini_texts(item)


def _strings_under(value: Any, keys: frozenset[str], *, inside: bool) -> Iterable[str]:
    """Strings found under any of ``keys`` (a nested JSON ``body`` string is opened, as Bedrock's)."""
    if isinstance(value, str):
        if inside:
            yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings_under(item, keys, inside=inside)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "body" and isinstance(item, (bytes, str)):
                nested = json_object(item)
                if nested is not None:
                    yield from _strings_under(nested, keys, inside=False)
                    continue
            yield from _strings_under(item, keys, inside=inside or key in keys)


# --------------------------------------------------------------------------- output


def response_text(api: str, data: Any) -> list[str]:
    """The generated text (and tool-call arguments) of a parsed, non-streamed response."""
    if isinstance(data, list):  # a Gemini stream read without alt=sse: one JSON array
        return [text for item in data for text in response_text(api, item)]
    if not isinstance(data, dict):
        return []
    family = api.partition(".")[0]
    if api == "openai.responses":
        return list(_responses_output(data.get("output")))
    if family == "openai":
        return list(_choices(data.get("choices"), "message"))
    if family == "anthropic":
        return list(_anthropic_text(data.get("content")))
    if family == "gemini":
        return list(_gemini_candidates(data))
    if family == "ollama":
        message = _dict(data.get("message"))
        return [t for t in (message.get("content"), message.get("thinking"), data.get("response")) if _str(t)]
    if family == "cohere":
        message = _dict(data.get("message"))
        texts = [_dict(part).get("text") for part in _list(message.get("content"))]
        texts.append(data.get("text"))  # v1
        return [t for t in texts if _str(t)]
    return []


def event_text(api: str, data: Any) -> list[str]:
    """The generated text carried by one parsed stream event (a delta, never a repeated whole)."""
    if not isinstance(data, dict):
        return []
    family = api.partition(".")[0]
    if api == "openai.responses":
        kind = data.get("type")
        delta = data.get("delta")
        return [delta] if isinstance(kind, str) and kind.endswith(".delta") and _str(delta) else []
    if family == "openai":
        return list(_choices(data.get("choices"), "delta"))
    if family == "anthropic":
        if data.get("type") == "content_block_delta":
            delta = _dict(data.get("delta"))
            texts = (delta.get("text"), delta.get("partial_json"), delta.get("thinking"))
            return [t for t in texts if _str(t)]
        if data.get("type") == "content_block_start":
            block = _dict(data.get("content_block"))
            return [block["name"]] if block.get("type") == "tool_use" and _str(block.get("name")) else []
        return []
    if family == "cohere":
        if data.get("type") == "content-delta":
            content = _dict(_dict(_dict(data.get("delta")).get("message")).get("content"))
            return [content["text"]] if _str(content.get("text")) else []
        if data.get("event_type") == "text-generation" and _str(data.get("text")):  # v1
            return [data["text"]]
        return []
    return response_text(api, data)  # Gemini and Ollama chunks have the shape of a whole response


def output_text(api: str, payload: bytes | tuple[str, list[bytes]] | None) -> str | None:
    """All generated text in what was received; None when it cannot be read (binary, unknown)."""
    if payload is None:
        return None
    if isinstance(payload, bytes):
        try:
            data = load_json(payload)
        except ParseError:
            return None
        return "".join(response_text(api, data))
    from ..providers.framing import LineFramer

    framing, chunks = payload
    if framing == "eventstream":  # binary AWS framing: read as Bedrock's botocore path is, not at all
        return None
    collector = _TextCollector(api, framing)
    framer = LineFramer(collector, framing)
    for chunk in chunks:
        framer.feed(chunk)
    framer.finish()
    return "".join(collector.texts)


class _TextCollector:
    """A stream accumulator that gathers generated text (run once, after the stream ended)."""

    def __init__(self, api: str, framing: str) -> None:
        self.api = api
        self.framing = framing
        self.done = False
        self.texts: list[str] = []

    def on_event(self, event: bytes, data: bytes) -> None:
        if data.startswith(b"[DONE]"):
            return
        try:
            parsed = load_json(data)
        except ParseError:
            return
        if isinstance(parsed, dict) and event and "type" not in parsed:
            parsed = {**parsed, "type": event.decode("utf-8", "replace")}
        self.texts.extend(event_text(self.api, parsed))


def _choices(choices: Any, key: str) -> Iterable[str]:
    for choice in map(_dict, _list(choices)):
        if _str(choice.get("text")):  # legacy completions
            yield choice["text"]
        message = _dict(choice.get(key))
        for name in ("content", "reasoning_content", "reasoning", "refusal"):
            value = message.get(name)
            if _str(value):
                yield value
            elif isinstance(value, list):
                yield from (p["text"] for p in map(_dict, value) if _str(p.get("text")))
        for call in _list(message.get("tool_calls")):
            function = _dict(_dict(call).get("function"))
            yield from (v for v in (function.get("name"), function.get("arguments")) if _str(v))


def _responses_output(items: Any) -> Iterable[str]:
    for item in map(_dict, _list(items)):
        kind = item.get("type")
        if kind == "message":
            yield from (p["text"] for p in map(_dict, _list(item.get("content"))) if _str(p.get("text")))
        elif kind == "function_call":
            yield from (v for v in (item.get("name"), item.get("arguments")) if _str(v))
        elif kind == "reasoning":
            yield from (p["text"] for p in map(_dict, _list(item.get("summary"))) if _str(p.get("text")))


def _anthropic_text(blocks: Any) -> Iterable[str]:
    for block in map(_dict, _list(blocks)):
        kind = block.get("type")
        if kind == "text" and _str(block.get("text")):
            yield block["text"]
        elif kind == "thinking" and _str(block.get("thinking")):
            yield block["thinking"]
        elif kind == "tool_use":
            yield str(block.get("name") or "")
            yield _compact(block.get("input"))


def _gemini_candidates(data: Mapping[str, Any]) -> Iterable[str]:
    for candidate in map(_dict, _list(data.get("candidates"))):
        for part in map(_dict, _list(_dict(candidate.get("content")).get("parts"))):
            if _str(part.get("text")):
                yield part["text"]
            elif isinstance(part.get("functionCall"), dict):
                yield _compact(part["functionCall"])


# --------------------------------------------------------------------------- the call


def fill(
    call: Call, request: Any, payload: bytes | tuple[str, list[bytes]] | None, gaps: tuple[str, ...] = ()
) -> None:
    """Give a call without reported usage estimated usage, or mark it ``unmetered``; with ``gaps``
    (counts a response that reports usage left out) estimate only those."""
    from .tokenizer import count

    if gaps:
        _fill_gaps(call, request, payload, gaps)
        return
    body = request_json(request)
    model = call.model if call.model != "unknown" else None
    if body is not None and model is None and isinstance(body.get("model"), str):
        model = body["model"]
        call.model = model
    estimate = estimate_input(call.api, body, model) if body is not None else None
    if estimate is None:
        call.state = CallState.UNMETERED
        reason = "request body is not JSON" if body is None else "request holds no countable text"
        call.detail = _joined(call.detail, f"unmetered: {reason}")
        return
    text = output_text(call.api, payload)
    output = count(text, model).tokens if text else 0
    call.usage = Usage(input_tokens=estimate.tokens, output_tokens=output)
    call.estimated = True
    what = "input and output" if text is not None else "input only (output not readable)"
    call.detail = _joined(call.detail, f"estimated {what}, {estimate.method}")


def _fill_gaps(
    call: Call, request: Any, payload: bytes | tuple[str, list[bytes]] | None, gaps: tuple[str, ...]
) -> None:
    """Estimate the counts named in ``gaps`` (a cached Ollama prompt without ``prompt_eval_count``);
    the reported ones stand. A gap that cannot be estimated is said in the detail, never made 0."""
    from .tokenizer import count

    model = call.model if call.model != "unknown" else None
    usage, filled, notes, method = call.usage, [], [], ""
    if "input_tokens" in gaps:
        body = request_json(request)
        estimate = estimate_input(call.api, body, model) if body is not None else None
        if estimate is None:
            notes.append("input not reported and not estimable")
        else:
            usage, method = replace(usage, input_tokens=estimate.tokens), estimate.method
            filled.append("input")
    if "output_tokens" in gaps:
        text = output_text(call.api, payload)
        if text is None:
            notes.append("output not reported and not readable")
        else:
            counted = count(text, model)
            usage, method = replace(usage, output_tokens=counted.tokens), method or counted.method
            filled.append("output")
    if filled:
        call.usage = usage
        call.estimated = True
        notes.insert(0, f"estimated {' and '.join(filled)} (not reported), {method}")
    call.detail = _joined(call.detail, "; ".join(notes))


def _joined(detail: str, more: str) -> str:
    return f"{detail}; {more}" if detail else more


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) if value is not None else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> TypeGuard[str]:
    """A non-empty string."""
    return isinstance(value, str) and bool(value)
