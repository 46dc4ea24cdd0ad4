"""The per-image pipeline: decode -> stylize -> finish -> encode -> write as stages that a photo, a folder run
(its planning and workers), video frames (kept stable by ``temporal``) and contact sheets all run; and the pixel blends.

Modules import each other directly; the layers above import what this ``__init__`` exports.
"""

from stylize.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "stages": ["StyleWeights", "decode", "encode", "finish", "forward", "stylize", "write"],
        "folder_plan": ["Job", "is_video"],
        "folder_run": ["FileRecord", "FolderSummary", "run_folder"],
        "temporal": ["FrameStylizer"],
        "sheet": ["Sheet", "SheetTile"],
    },
)
