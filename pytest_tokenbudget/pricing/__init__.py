"""What a call costs: genai-prices and ``[tool.tokenbudget.prices]``, and models' context windows."""
