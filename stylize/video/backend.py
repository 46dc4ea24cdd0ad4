"""PyAV, the optional dependency every video module reads and writes through.

``import stylize.video`` works without it; the entry points call :func:`require_av` first, which raises a one-line
:class:`~stylize.errors.StylizeError` naming the install command. Modules import ``av`` from here and use it only
inside functions, so that nothing fails at import time.
"""

from __future__ import annotations

from types import ModuleType

from stylize.errors import StylizeError

try:
    import av
except ImportError:  # the optional extra is not installed; require_av() says what to do
    av = None  # type: ignore[assignment]

#: What a user types to get video support.
INSTALL_COMMAND = "pip install 'stylize[video]'"


def require_av() -> ModuleType:
    """Return the ``av`` module, or raise StylizeError with the install command when PyAV is missing."""
    if av is None:
        raise StylizeError("video files need PyAV, which is not installed", f"install it with: {INSTALL_COMMAND}")
    return av
