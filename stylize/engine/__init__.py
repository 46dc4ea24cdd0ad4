"""How a network runs: routing each call whole, in tiles or compiled, the CPU/GPU fast path, tiling, ONNX export
and the choice of a model's precision. Works on tensors; knows nothing of files.

Modules import each other directly; the layers above import what this ``__init__`` exports.
"""

from stylize.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "routing": ["Engine"],
        "compilation": ["COMPILE_MODES", "check_compile_mode"],
        "precision": ["candidate_precisions", "choose_precision"],
        "export": ["MAX_ABS_ERROR", "export_onnx"],
    },
)
