"""giftgraph's composition root: settings, the Starlette app, auth and the CLI."""

__all__ = ["__version__"]
__version__ = "0.1.0"
