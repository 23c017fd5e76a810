"""Recognise LLM API requests by their shape and name the provider by its host.

A request is an LLM call when its path has a known API shape (``/chat/completions``,
``/v1/messages`` …), whatever the host: OpenAI-compatible servers (vLLM, llama.cpp, proxies) are
recognised by shape, and named by host where the host is known. Everything else passes untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from .anthropic import Messages
from .base import ApiParser, Extracted, ParseError, StreamAccumulator
from .bedrock import PATHS as BEDROCK_PATHS
from .bedrock import Runtime
from .cohere import Chat
from .gemini import GenerateContent, Interactions
from .ollama import Native
from .openai import AssistantsRuns, ChatCompletions, Responses

__all__ = ["ApiParser", "Extracted", "ParseError", "Route", "StreamAccumulator", "provider_for_host", "route"]


@dataclass(frozen=True, slots=True)
class Route:
    """How to read one request's response: its provider, API and parser."""

    provider: str
    api: str
    host: str
    parser: ApiParser
    model_hint: str | None = None  # the model named in the path (Gemini, Vertex, Bedrock), if any
    follow_up: bool = False
    """The request reads a response made earlier (``GET /responses/{id}``): it is not a call of its
    own, and records only usage no exchange has counted yet (see ``capture/late.py``)."""


_CHAT = ChatCompletions("openai.chat")
_COMPLETIONS = ChatCompletions("openai.completions")
_EMBEDDINGS = ChatCompletions("openai.embeddings")
_RESPONSES = Responses()
_ASSISTANTS_RUNS = AssistantsRuns()
_MESSAGES = Messages()
_GEMINI_GENERATE = GenerateContent("gemini.generate")
_GEMINI_EMBED = GenerateContent("gemini.embed")
_GEMINI_INTERACTIONS = Interactions()
_OLLAMA_CHAT = Native("ollama.chat")
_OLLAMA_GENERATE = Native("ollama.generate")
_OLLAMA_EMBED = Native("ollama.embed")
_COHERE_CHAT = Chat("cohere.chat")
_COHERE_EMBED = Chat("cohere.embed")
_BEDROCK = {operation: Runtime(api) for operation, api in BEDROCK_PATHS.items()}

# (suffix of the host, provider id as genai-prices knows it)
_HOSTS: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure"),
    (".cognitiveservices.azure.com", "azure"),
    (".services.ai.azure.com", "azure"),
    ("api.anthropic.com", "anthropic"),
    ("api.groq.com", "groq"),
    ("api.together.xyz", "together"),
    ("api.together.ai", "together"),
    ("api.fireworks.ai", "fireworks"),
    ("api.deepseek.com", "deepseek"),
    ("openrouter.ai", "openrouter"),
    ("api.x.ai", "x-ai"),
    ("api.mistral.ai", "mistral"),
    ("api.perplexity.ai", "perplexity"),
    ("api.cerebras.ai", "cerebras"),
    ("generativelanguage.googleapis.com", "google"),
    ("aiplatform.googleapis.com", "google-vertex"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    ("api.ai21.com", "ai21"),
)

_FAMILY_DEFAULT = {"ollama": "ollama", "gemini": "google", "cohere": "cohere", "bedrock": "bedrock"}
# Bedrock's runtime paths are its own (``/model/{id}/converse`` …) on AWS hosts (regional, FIPS,
# VPC endpoints), proxies and test servers alike: named "bedrock" everywhere, as boto3's calls are.


def provider_for_host(host: str, family: str) -> str:
    """The provider serving ``host``; unknown hosts are ``<family>-compatible``."""
    host = host.lower()
    for suffix, provider in _HOSTS:
        if host == suffix.lstrip(".") or host.endswith(suffix):
            return provider
    return _FAMILY_DEFAULT.get(family, f"{family}-compatible")


def _google_method(path: str) -> tuple[str | None, str | None]:
    """``(model, method)`` of ``…/models/NAME:method`` paths, else ``(None, None)``."""
    _, sep, tail = path.rpartition("/models/")
    if not sep or ":" not in tail:
        return None, None
    model, _, method = tail.partition(":")
    return model, method


def _bedrock_operation(path: str) -> tuple[ApiParser | None, str | None]:
    """``(parser, model id)`` of ``…/model/{modelId}/{operation}`` paths (Bedrock runtime).

    The id is URL-quoted on the wire (``anthropic.claude-3-5-sonnet-20241022-v2%3A0``, an ARN
    with ``%2F``); httpx hands over the path unquoted, requests quoted: both read the same.
    """
    head, _, operation = path.rpartition("/")
    parser = _BEDROCK.get(operation)
    if parser is None:
        return None, None
    _, sep, model = head.partition("/model/")
    if not sep or not model:
        return None, None
    return parser, unquote(model)


def _parser_for_path(host: str, path: str) -> tuple[ApiParser | None, str | None]:
    path = path.rstrip("/")
    if "/model/" in path:
        parser, model_hint = _bedrock_operation(path)
        if parser is not None:
            return parser, model_hint
    if path.endswith("/chat/completions"):
        return _CHAT, None
    if path.endswith("/completions"):
        return _COMPLETIONS, None
    if path.endswith("/embeddings") and not path.endswith("/api/embeddings"):
        return _EMBEDDINGS, None
    if path.endswith("/responses"):
        return _RESPONSES, None
    if "/threads/" in path and (
        path.endswith("/runs") or (path.endswith("/submit_tool_outputs") and "/runs/" in path)
    ):  # Assistants: /threads/runs, /threads/{id}/runs, /threads/{id}/runs/{run}/submit_tool_outputs
        return _ASSISTANTS_RUNS, None
    if path.endswith("/v1/messages") or path == "/messages":
        return _MESSAGES, None
    model, method = _google_method(path)
    if method is not None:
        if method in ("generateContent", "streamGenerateContent"):
            return _GEMINI_GENERATE, model
        if method in ("embedContent", "batchEmbedContents"):
            return _GEMINI_EMBED, model
        if method in ("rawPredict", "streamRawPredict") and "/publishers/anthropic/" in path:
            return _MESSAGES, model  # Anthropic on Vertex AI
        return None, None  # countTokens and friends are not usage
    if path.endswith("/interactions") and "googleapis.com" in host:
        return _GEMINI_INTERACTIONS, None
    if path == "/api/chat":
        return _OLLAMA_CHAT, None
    if path == "/api/generate":
        return _OLLAMA_GENERATE, None
    if path in ("/api/embed", "/api/embeddings"):
        return _OLLAMA_EMBED, None
    if path in ("/v1/chat", "/v2/chat") and ("cohere" in host or path == "/v2/chat"):
        return _COHERE_CHAT, None
    if path in ("/v1/embed", "/v2/embed") and "cohere" in host:
        return _COHERE_EMBED, None
    return None, None


@lru_cache(maxsize=1024)
def _route(host: str, path: str) -> Route | None:
    parser, model_hint = _parser_for_path(host, path)
    if parser is None:
        return None
    family = parser.api.split(".", 1)[0]
    if family == "anthropic" and "googleapis.com" in host:
        return Route("google-vertex", parser.api, host, parser, model_hint)
    return Route(provider_for_host(host, family), parser.api, host, parser, model_hint)


@lru_cache(maxsize=256)
def _follow_up_route(host: str) -> Route:
    return Route(provider_for_host(host, "openai"), _RESPONSES.api, host, _RESPONSES, follow_up=True)


def _follow_up(host: str, path: str) -> Route | None:
    """``GET …/responses/resp_…``: an OpenAI Responses response read again (a background
    response polled, or its stream resumed with ``?stream=true&starting_after=N``)."""
    _, sep, response_id = path.rstrip("/").rpartition("/responses/")
    if not sep or not response_id.startswith("resp") or "/" in response_id:
        return None  # also …/responses/{id}/input_items
    return _follow_up_route(host)


def route(method: str, host: str, path: str) -> Route | None:
    """The route for a request, or None when it is not an LLM call this plugin reads."""
    if method != "POST":
        return _follow_up(host, path) if method == "GET" else None
    return _route(host, path)
