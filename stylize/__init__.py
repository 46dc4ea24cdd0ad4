"""stylize: fast feed-forward neural style transfer.

>>> from stylize import Stylizer
>>> stylizer = Stylizer.load()            # the bundled default model
>>> stylizer.apply("photo.jpg", style="starry").save("out.jpg")
>>> stylizer.apply_folder("photos/", "out/", progress=True)
>>> from stylize import TrainConfig, train
>>> train(TrainConfig(style=("starry_night",), out="starry.safetensors"), progress=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stylize.lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["ApplyOptions", "FolderOptions", "Stylizer", "StylizeError", "TrainConfig", "__version__", "prepare_process", "train"]

if TYPE_CHECKING:
    from stylize.api import Stylizer
    from stylize.config import ApplyOptions, FolderOptions, TrainConfig
    from stylize.errors import StylizeError
    from stylize.runtime import prepare_process
    from stylize.training import train

# Lazy (stylize.lazy), so that `import stylize` and the CLI's start-up do not pay for torch until it is needed.
__getattr__ = lazy_exports(
    __name__,
    {
        "api": ["Stylizer"],
        "errors": ["StylizeError"],
        "config": ["ApplyOptions", "FolderOptions", "TrainConfig"],
        "runtime": ["prepare_process"],
        "training": ["train"],
    },
)[0]
