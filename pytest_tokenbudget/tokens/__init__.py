"""Tokens where a response reports none: tiktoken encodings, counting, marked estimates."""
