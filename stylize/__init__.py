"""stylize: fast feed-forward neural style transfer.

>>> from stylize import Stylizer
>>> stylizer = Stylizer.load()            # the bundled default model
>>> stylizer.apply("photo.jpg", style="starry").save("out.jpg")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Stylizer", "StylizeError", "__version__"]

if TYPE_CHECKING:
    from stylize.api import Stylizer
    from stylize.errors import StylizeError


def __getattr__(name: str):
    # Lazy so that `import stylize` (and the CLI's start-up) does not pay for torch until it is needed.
    if name == "Stylizer":
        from stylize.api import Stylizer

        return Stylizer
    if name == "StylizeError":
        from stylize.errors import StylizeError

        return StylizeError
    raise AttributeError(f"module 'stylize' has no attribute {name!r}")
