"""Errors that reach the user as one clear line.

Every error raised for bad input derives from :class:`SeeInPairsError`; the CLI
prints its message (no traceback) and exits with status 2. Messages name the
file, row and field that are wrong so the user can fix the input directly.
"""

from __future__ import annotations


class SeeInPairsError(Exception):
    """Base class for user-facing errors (bad input, bad config, impossible request)."""


class ManifestError(SeeInPairsError):
    """A manifest row or field is invalid."""


class ImageError(SeeInPairsError):
    """An image file is missing, unreadable or of an unsupported format."""


class ConfigError(SeeInPairsError):
    """An experiment or task configuration is invalid."""


class BankError(SeeInPairsError):
    """The reference bank cannot satisfy a selection request."""


class RegistryError(SeeInPairsError):
    """An unknown name was asked of a registry."""


class BackendError(SeeInPairsError):
    """A model backend could not be loaded or could not serve a request."""
