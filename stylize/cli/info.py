"""``stylize models`` and ``stylize info``."""

from __future__ import annotations

import json
import platform

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("info")(info)


def models(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """List bundled and local style models with their styles."""
    from stylize.api import model_records

    records = model_records()
    if as_json:
        typer.echo(json.dumps({"models": records}, indent=2))
        return
    table = Table(title="style models", caption="every style on your own photo: stylize sheet PHOTO OUT [--model NAME]")
    for column in ("name", "origin", "styles", "default style", "path"):
        table.add_column(column)
    for r in records:
        styles = r.get("styles")
        if "error" in r:
            shown = "error: " + r["error"]
        elif r["any_painting"]:
            shown = "any painting (--style-image)"
        else:
            shown = f"{len(styles)}: {', '.join(styles[:8])}{' ...' if len(styles) > 8 else ''}"
        name = f"{r['name']} (default)" if r.get("default") else r["name"]
        table.add_row(name, r["origin"], shown, str(r.get("default_style") or ""), r["path"])
    Console().print(table)


def info(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Print versions, devices and where models are looked up."""
    import PIL
    import torch

    from stylize import __version__
    from stylize.devices import cpu_has_fast_bf16
    from stylize.io import search_folders

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    data = {
        "stylize": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "threads": torch.get_num_threads(),
        "cuda": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "mps": bool(mps and mps.is_available()),
        "model_folders": [{"origin": origin, "path": str(path), "exists": path.is_dir()} for origin, path in search_folders()],
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console()
    for key, value in data.items():
        if key == "model_folders":
            console.print("model folders (searched in this order):")
            for folder in value:
                console.print(f"  {folder['origin']:8s} {folder['path']}{'' if folder['exists'] else '  (missing)'}")
        else:
            console.print(f"{key}: {value}")
