"""The networks: the generator's plan (``topology``) and its reference module, the channels-last kernels they
share with the fast path, the style predictor, and model files (a model file is a generator's tensors and config).

Modules import each other directly; the layers above import what this ``__init__`` exports.
"""

from stylize.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "topology": [
            "AddSkip",
            "Conv",
            "NormStatistics",
            "SIZE_MULTIPLE",
            "SaveSkip",
            "check_size",
            "feeds_only_next_conv",
            "pad_input",
            "padded_size",
            "style_weights",
            "to_pixels",
        ],
        "generator": ["ConvNormAct", "Generator"],
        "kernels": [
            "WIDE_CHANNELS",
            "batch_norm_statistics",
            "batch_norm_with_",
            "instance_norm_",
            "is_channels_last",
            "phase_reflect_pad",
            "phase_unview",
            "phase_view",
            "reflect_pad",
        ],
        "predictor": ["StylePredictor", "load_predictor", "style_code"],
        "modelfile": ["StyleModel", "load_model", "save_model"],
    },
)
