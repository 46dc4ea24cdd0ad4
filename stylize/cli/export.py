"""``stylize export``: a model as ONNX (dynamic height and width, style-weight input), checked with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    model: str = typer.Argument(..., metavar="MODEL", help="Model name or file."),
    target: Path = typer.Argument(..., metavar="OUT", help="The .onnx file to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare onnxruntime's output with PyTorch's (needs onnxruntime)."),
) -> None:
    """Export a style model to ONNX: stylize export MODEL OUT.onnx."""
    from stylize.engine import MAX_ABS_ERROR, export_onnx
    from stylize.errors import StylizeError
    from stylize.io import find_model
    from stylize.network import load_model

    if target.suffix.lower() != ".onnx":
        raise StylizeError(f"output must end in .onnx, got {target.name}", "e.g. stylize export multistyle26 out.onnx")
    if target.exists() and not overwrite:
        raise StylizeError(f"output {target} already exists", "pass --overwrite to replace it")
    try:
        import onnx  # noqa: F401  # torch.onnx.export needs it
    except ImportError:
        raise StylizeError("exporting to ONNX needs the onnx package", "pip install 'stylize[import]'") from None
    report = export_onnx(load_model(find_model(model)), target, check=check)
    if report.max_abs_error is None:
        verdict = "not checked" + ("" if not check else " (onnxruntime not installed)")
    else:
        verdict = f"onnxruntime max abs error {report.max_abs_error:.1e} (limit {MAX_ABS_ERROR:.0e})"
    typer.echo(f"{model} -> {target}  (inputs: {', '.join(report.inputs)}; dynamic height and width; {verdict})")
