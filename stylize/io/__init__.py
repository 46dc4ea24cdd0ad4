"""Files and formats: image decoding and encoding, the PNG writer, atomic files, finding models by name, bundled
files and their SHA-256. Imports only the base (config, errors).

Modules import each other directly; the layers above import what this ``__init__`` exports.
"""

from stylize.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "decoding": ["GREYSCALE_MODES", "PixelLimitError", "open_image", "pixels_of", "to_float"],
        "encoding": ["OUTPUT_EXTENSIONS", "encode_image", "finish_image", "output_format", "quantize", "tensor_to_image"],
        "files": [
            "AtomicFile",
            "check_output",
            "display_path",
            "make_parent_folder",
            "remove_stale_temporaries",
            "remove_stale_temporaries_of",
            "same_file",
            "write_atomic",
            "write_error",
        ],
        "catalog": ["DEFAULT_MODEL", "find_model", "list_models", "search_folders"],
        "resources": ["BUNDLED_PHOTOS_DIR", "BUNDLED_STYLES_DIR", "bundled_folder", "bundled_path", "sha256_of", "user_models_dir", "verify_file"],
    },
)
