"""The command line: ``seeinpairs`` and its command groups (multi-image QA, set differences, evidence).

Commands only parse options, read configs and call the layers below; nothing below imports from here."""

from .app import app, main

__all__ = ["app", "main"]
