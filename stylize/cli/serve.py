"""``stylize serve``: the studio page and the HTTP API, with the models kept loaded (the ``serve`` extra)."""

from __future__ import annotations

import logging

import typer

from stylize.config import ServeOptions

_SERVE = ServeOptions()
INSTALL = "pip install 'stylize[serve]'"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: str = typer.Option(_SERVE.host, "--host", help="Address to listen on; anything but loopback lets other machines in."),
    port: int = typer.Option(_SERVE.port, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    models: list[str] = typer.Option([], "--model", "-m", help="A model to load before the first request; repeat for several."),
    device: str = typer.Option(_SERVE.device, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option(_SERVE.precision, "--precision", help="auto, fp32, bf16 or fp16."),
    compile: str = typer.Option(_SERVE.compile, "--compile", help="never (default here), auto or always."),
    max_upload_bytes: int = typer.Option(_SERVE.max_upload_bytes, "--max-upload-bytes", min=1024, help="Largest request body in bytes."),
    max_pixels: int = typer.Option(_SERVE.max_pixels, "--max-pixels", min=64, help="Refuse uploaded images with more pixels."),
    max_pending: int = typer.Option(_SERVE.max_pending, "--max-pending", min=1, help="Requests worked on at once; more are answered 503."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Photos of equal size run together (default 4 on CPU, 8 on CUDA)."),
) -> None:
    """Serve the studio page (every style on your photo, pick, tune, download) and the HTTP API on this machine."""
    from stylize.errors import StylizeError

    try:
        from stylize.serve import serve as run_server
    except ImportError as exc:
        raise StylizeError(f"stylize serve needs the serve extra (missing: {exc.name})", INSTALL) from None
    from stylize.cli import debug_on

    options = ServeOptions(
        host=host, port=port, models=tuple(models), device=device, precision=precision, compile=compile,
        max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, max_pending=max_pending, batch_size=batch_size,
    )  # fmt: skip
    logging.basicConfig(level=logging.DEBUG if debug_on() else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not options.is_loopback:
        typer.echo(
            f"warning: listening on {host}: other machines can reach this server and use its CPU or GPU; "
            "it has no authentication (use --host 127.0.0.1 to keep it to this machine)",
            err=True,
        )
    if models:
        typer.echo(f"loading {', '.join(models)} ...", err=True)

    def ready(url: str) -> None:
        typer.echo(f"stylize serve: {url}/ (the page), {url}/docs (the API); Ctrl-C stops", err=True)

    try:
        run_server(options, on_ready=ready)
    except KeyboardInterrupt:  # uvicorn has finished its graceful shutdown and passes the signal on
        pass
    typer.echo("stopped", err=True)
