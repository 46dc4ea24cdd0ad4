"""How the server says what went wrong: a :class:`~stylize.errors.StylizeError` with an HTTP status, as JSON.

Every error response has the body ``{"error": ONE_LINE, "message": ..., "hint": ..., "status": CODE}``; ``error`` is
what ``stylize apply`` would print after ``error:``, with settings named as the form fields are.
"""

from __future__ import annotations

from typing import Any

from stylize.errors import EXIT_BAD_INPUT, StylizeError


class Problem(StylizeError):
    """A failure of one request that the client can act on, with the HTTP status that says which kind."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, EXIT_BAD_INPUT if status < 500 else 1)
        self.status = status


def status_of(error: StylizeError) -> int:
    """400 for bad input, 413 for an image or upload over the server's limits, 500 for a failure while working."""
    from stylize.io import PixelLimitError

    if isinstance(error, Problem):
        return error.status
    if isinstance(error, PixelLimitError):
        return 413
    return 400 if error.exit_code == EXIT_BAD_INPUT else 500


def body(error: StylizeError, status: int) -> dict[str, Any]:
    return {"error": error.one_line(), "message": error.message, "hint": error.hint, "status": status}
