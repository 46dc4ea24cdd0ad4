"""Export a style model to ONNX: dynamic height and width, a style-weight input for N-style models, self-checked.

The ONNX graph takes ``image`` ``(B, 3, H, W)`` float32 in ``[0, 1]`` of any H and W (>= 8), and, for models with
more than one style, ``style_weights`` ``(S,)`` float32 (one-hot for one style, a convex mix to blend); it
returns ``stylized`` ``(B, 3, H, W)`` in ``[0, 1]``. Reflection padding to a multiple of 4 and the crop back are
inside the graph, so callers need no preprocessing: the graph is :class:`~stylize.network.generator.Generator`'s own
forward pass, traced (its input padding always runs when traced, so that the graph does not depend on the traced
size). When onnxruntime is installed the export checks itself:
onnxruntime's output must equal PyTorch's within :data:`MAX_ABS_ERROR` on odd-sized test inputs.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.network import Generator, StyleModel

#: Largest difference allowed between onnxruntime's and PyTorch's output, on the [0, 1] scale.
MAX_ABS_ERROR = 5e-4
OPSET = 17
#: Sizes the self-check runs: odd sizes so that the in-graph padding and crop are exercised.
CHECK_SIZES = ((37, 53), (64, 64), (90, 71))


class _SingleStyle(nn.Module):
    """A one-style generator with the image as its only input."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.generator(image, torch.ones(1, dtype=image.dtype, device=image.device))


@dataclass(frozen=True)
class ExportReport:
    path: Path
    inputs: list[str]
    max_abs_error: float | None  # None when onnxruntime is not installed


def export_onnx(model: StyleModel, path: str | os.PathLike[str], check: bool = True, opset: int = OPSET) -> ExportReport:
    """Write ``model`` as ONNX to ``path`` and, when onnxruntime is installed and ``check``, verify it."""
    path = Path(path)
    generator = model.generator.float().cpu().eval()
    num_styles = generator.config.num_styles
    sample = torch.rand(1, 3, 37, 53)
    if num_styles > 1:
        module: nn.Module = generator
        args: tuple[torch.Tensor, ...] = (sample, torch.full((num_styles,), 1.0 / num_styles))
        inputs = ["image", "style_weights"]
    else:
        module, args, inputs = _SingleStyle(generator), (sample,), ["image"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: the check below is the proof
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=["stylized"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "stylized": {0: "batch", 2: "height", 3: "width"}},
            opset_version=opset,
            dynamo=False,
        )
    error = check_onnx(model, path) if check else None
    if error is not None and error > MAX_ABS_ERROR:
        raise StylizeError(
            f"the exported {path.name} differs from PyTorch by {error:.2e} (limit {MAX_ABS_ERROR:.0e})",
            "report it with the model file; the ONNX file was written but should not be used",
            exit_code=EXIT_FAILURE,
        )
    return ExportReport(path=path, inputs=inputs, max_abs_error=error)


def check_onnx(model: StyleModel, path: str | os.PathLike[str]) -> float | None:
    """Largest |onnxruntime - PyTorch| over odd-sized inputs and a few styles; None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = model.generator.float().cpu().eval()
    num_styles = generator.config.num_styles
    styles = [torch.nn.functional.one_hot(torch.tensor(i), num_styles).float() for i in {0, num_styles - 1}]
    if num_styles > 1:
        styles.append(torch.full((num_styles,), 1.0 / num_styles))
    generator_rng = torch.Generator().manual_seed(0)
    worst = 0.0
    for height, width in CHECK_SIZES:
        image = torch.rand(2 if height == 64 else 1, 3, height, width, generator=generator_rng)
        for weights in styles:
            with torch.no_grad():
                expected = generator(image, weights)
            feeds = {"image": image.numpy()}
            if num_styles > 1:
                feeds["style_weights"] = weights.numpy()
            got = torch.from_numpy(session.run(None, feeds)[0])
            if got.shape != expected.shape:
                raise StylizeError(f"the exported {Path(path).name} returned shape {tuple(got.shape)} for {tuple(image.shape)}", "report it")
            worst = max(worst, (got - expected).abs().max().item())
    return worst
