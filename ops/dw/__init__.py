"""``dw``: the operator's command line, talking to a server over its public HTTP API only."""
