"""The one exception type for failures a user can act on.

Programming errors stay ordinary exceptions; anything caused by the user's input, files or environment
is raised as :class:`StylizeError` with a message that says what is wrong and a hint that says what to do.
Only the CLI turns it into an exit code.

Messages name settings as the Python API does, between backticks (```max_size```, ```tile=auto```): the API shows
them without the backticks, the CLI as its flags (``--max-size``, ``--tile auto``).
"""

from __future__ import annotations

import re

#: Exit code for bad input or usage (a file that is not an image, an unknown style, a bad flag value).
EXIT_BAD_INPUT = 2
#: Exit code for a failure while doing the work (out of memory, a disk error, some files of a batch failed).
EXIT_FAILURE = 1
_SETTING = re.compile(r"`(\w+)(=[^`]*)?`")


class StylizeError(Exception):
    """A failure the user can fix: ``message`` says what is wrong, ``hint`` what to do about it."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_BAD_INPUT) -> None:
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        super().__init__(self.one_line())

    def marked_line(self) -> str:
        """The message and hint on a single line, settings still marked with backticks."""
        text = self.message.replace("\n", " ")
        return f"{text} ({self.hint})" if self.hint else text

    def one_line(self) -> str:
        """The message and hint on a single line, settings named as Python parameters (``max_size``, ``tile=auto``)."""
        return _SETTING.sub(lambda m: m.group(1) + (m.group(2) or ""), self.marked_line())


def as_flags(text: str) -> str:
    """A marked line with its settings written as command-line flags: ```tile=auto``` -> ``--tile auto``."""

    def flag(match: re.Match) -> str:
        name = "--" + match.group(1).replace("_", "-")
        return f"{name} {match.group(2)[1:]}" if match.group(2) else name

    return _SETTING.sub(flag, text)
