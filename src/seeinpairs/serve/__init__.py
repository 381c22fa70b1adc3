"""``seeinpairs serve``: a diagnosis API, an OpenAI-compatible chat endpoint and a web page for one model."""

from .schemas import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(*args, **kwargs):
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
