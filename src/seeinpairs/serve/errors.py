"""The API's client errors: a status, a one-line message, a machine-readable code and the parameter at fault.

They are answered as OpenAI answers them (``{"error": {"message", "type", "param", "code"}}``), so the
official clients raise the exception class that matches the status (BadRequestError for a 400,
NotFoundError for a 404, ...) and can show which parameter was wrong.
"""

from __future__ import annotations


class APIError(Exception):
    """A client error with its status code, a one-line message, a ``kind`` (the error's ``code``) and
    the request ``param`` it concerns (None when it concerns the request as a whole)."""

    def __init__(self, status: int, message: str, kind: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_type(status: int) -> str:
    """OpenAI's broad error ``type`` for a status: the code says the specific reason."""
    if status >= 500:
        return "server_error"
    return "authentication_error" if status == 401 else "invalid_request_error"
