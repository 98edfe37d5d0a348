"""The HTTP search service (FastAPI) and its web page: ``create_app(ServeSettings(index=...))``."""

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'cfcd.serve' has no attribute {name!r}")
