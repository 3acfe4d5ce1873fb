"""The HTTP API (Starlette on Hypercorn): thin routes over the daemon's status and commands."""
