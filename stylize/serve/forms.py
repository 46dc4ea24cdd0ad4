"""The HTTP API's form fields, generated from the option dataclasses: a new setting is a new field, with its default
and the comment above it in ``stylize/config.py`` as its description in the OpenAPI schema.

``POST /v1/stylize`` takes every :class:`~stylize.config.ApplyOptions` field but those a server keeps to itself
(:data:`~stylize.config.SERVER_OWNED_FIELDS`); ``POST /v1/sheet`` takes the :class:`~stylize.config.SheetOptions`
fields and, for every tile, the same apply fields but those the sheet sets. Each endpoint is built as a function whose
signature FastAPI reads (as ``stylize train`` builds its flags from ``TrainConfig``).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from fastapi import File, Form, UploadFile

from stylize.config import SERVER_OWNED_FIELDS, ApplyOptions, SheetOptions, field_help

#: Apply fields that a sheet sets itself: each tile's style, and its size.
SHEET_OWNED_FIELDS = frozenset({"style", "mix", "max_size", "work_size"})
#: SheetOptions fields that are not form fields: paintings come as uploads, apply as its own fields.
SHEET_NOT_FORM_FIELDS = frozenset({"paintings", "apply"})


def apply_fields(exclude: frozenset[str] = frozenset()) -> list[str]:
    """Names of the ApplyOptions fields a client sets (all but the server's own and ``exclude``)."""
    return [f.name for f in dataclasses.fields(ApplyOptions) if f.name not in SERVER_OWNED_FIELDS | exclude]


def sheet_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(SheetOptions) if f.name not in SHEET_NOT_FORM_FIELDS]


def endpoint(function: Callable[..., Any], uploads: list[inspect.Parameter], fields: list[tuple[type, str]]) -> Callable[..., Any]:
    """``function(**values)`` with a signature of the ``uploads`` (file parts) and one form field per ``(dataclass,
    field name)``, which FastAPI reads to parse requests and write the schema."""
    parameters = uploads + [form_parameter(cls, name) for cls, name in fields]
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return function


def upload(name: str, description: str, required: bool = True, several: bool = False) -> inspect.Parameter:
    """A file part: one (``several=False``) or any number of parts of that name."""
    annotation: Any = list[UploadFile] if several else UploadFile
    default = File(... if required else None, description=description)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation if required else annotation | None)


def text_field(name: str, description: str, default: str | None = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=Form(default, description=description), annotation=str | None)


def form_parameter(cls: type, name: str) -> inspect.Parameter:
    """The form field of dataclass ``cls``'s field ``name``: its type made plain (bool, int, float or text), its default."""
    item = next(f for f in dataclasses.fields(cls) if f.name == name)
    hint = typing.get_type_hints(cls)[name]
    default = item.default if item.default is not dataclasses.MISSING else None
    if isinstance(default, tuple):
        default = ",".join(map(str, default)) or None
    annotation = _form_type(hint)
    description = field_help(cls).get(name)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=Form(default, description=description), annotation=annotation)


def _form_type(hint: Any) -> Any:
    """``bool``, ``int``, ``float`` as they are (optional when None is allowed); everything else is text."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in args
    plain = [arg for arg in args if arg is not type(None)]
    kind = plain[0] if len(plain) == 1 and plain[0] in (bool, int, float) else str
    return kind | None if optional or kind is str else kind
