"""Recognise LLM API requests by their shape and name the provider by its host.

A request is an LLM call when its path has a known API shape (``/chat/completions``,
``/v1/messages`` …), whatever the host: OpenAI-compatible servers (vLLM, llama.cpp, proxies) are
recognised by shape, and named by host where the host is known. Everything else passes untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .anthropic import Messages
from .base import ApiParser, Extracted, ParseError, StreamAccumulator
from .openai import ChatCompletions, Responses

__all__ = ["ApiParser", "Extracted", "ParseError", "Route", "StreamAccumulator", "provider_for_host", "route"]


@dataclass(frozen=True, slots=True)
class Route:
    """How to read one request's response: its provider, API and parser."""

    provider: str
    api: str
    host: str
    parser: ApiParser


_CHAT = ChatCompletions("openai.chat")
_COMPLETIONS = ChatCompletions("openai.completions")
_EMBEDDINGS = ChatCompletions("openai.embeddings")
_RESPONSES = Responses()
_MESSAGES = Messages()

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
)


def provider_for_host(host: str, family: str) -> str:
    """The provider serving ``host``; unknown hosts are ``<family>-compatible``."""
    host = host.lower()
    for suffix, provider in _HOSTS:
        if host == suffix.lstrip(".") or host.endswith(suffix):
            return provider
    return f"{family}-compatible"


def _parser_for_path(path: str) -> ApiParser | None:
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return _CHAT
    if path.endswith("/completions"):
        return _COMPLETIONS
    if path.endswith("/embeddings"):
        return _EMBEDDINGS
    if path.endswith("/responses"):
        return _RESPONSES
    if path.endswith("/v1/messages") or path == "/messages":
        return _MESSAGES
    return None


@lru_cache(maxsize=1024)
def _route(host: str, path: str) -> Route | None:
    parser = _parser_for_path(path)
    if parser is None:
        return None
    family = parser.api.split(".", 1)[0]
    return Route(provider_for_host(host, family), parser.api, host, parser)


def route(method: str, host: str, path: str) -> Route | None:
    """The route for a request, or None when it is not an LLM call this plugin reads."""
    if method != "POST":
        return None
    return _route(host, path)
