"""Looking at what the requests hold: the request anatomy, stale cassettes, context-window headroom."""
