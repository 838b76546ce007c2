"""`seedbed serve`: the HTTP API (search, grounded chat completions, synthesis jobs) over loaded indexes."""

from engine.api.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
