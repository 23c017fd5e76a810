"""A small customer-support assistant: the example app whose tests pytest-tokenbudget measures."""

from .assistant import Article, SupportAssistant

__all__ = ["Article", "SupportAssistant"]
