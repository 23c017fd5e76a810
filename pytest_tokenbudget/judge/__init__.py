"""Usage held against limits: per-test and scoped budgets, the session gate, the hard cost cap."""
