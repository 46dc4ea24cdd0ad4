"""Training: the train loop and its set-up, training data, the perceptual losses and their VGG16 loss network,
checkpoints. Above the engine and the network; beside the API, which never imports it.

Modules import each other directly; the layers above import what this ``__init__`` exports.
"""

from stylize.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "loop": ["train"],
    },
)
