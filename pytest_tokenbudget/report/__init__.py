"""Renderers: each turns a :class:`~pytest_tokenbudget.model.Run` into one report format."""
