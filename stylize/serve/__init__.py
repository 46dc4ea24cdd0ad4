"""``stylize serve``: the studio page and the HTTP API over loaded models (FastAPI and uvicorn, the ``serve`` extra).

:func:`create_app` builds the application (:mod:`stylize.serve.app`); :func:`serve` runs it in the foreground,
:func:`running` in a background thread. Each model is run by one worker thread that batches the requests waiting for
it (:mod:`stylize.serve.workers`); the form fields come from the option dataclasses (:mod:`stylize.serve.forms`).
Importing this package needs the extra: ``pip install 'stylize[serve]'``.
"""

from stylize.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "app": ["create_app"],
        "server": ["running", "serve"],
        "workers": ["ModelWorker", "Models"],
    },
)
