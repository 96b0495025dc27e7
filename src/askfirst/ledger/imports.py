"""Importing JSONL files into the ledger, all or nothing, naming the first bad line."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from askfirst import jsontext
from askfirst.errors import InputError
from askfirst.ledger.events import Event, SubjectIn, event_in
from askfirst.ledger.ledger import Ledger


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    with fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    obj = jsontext.loads(raw)
                except InputError as e:
                    raise InputError(f"{path} line {lineno}: {e}") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{path} line {lineno}: expected a JSON object")
                yield lineno, obj
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None


def _explain(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def _parse(path: Path, model: Any) -> tuple[list[int], list[Any]]:
    linenos: list[int] = []
    items: list[Any] = []
    for lineno, obj in _lines(path):
        try:
            item = (
                model.model_validate(obj)
                if isinstance(model, type) and issubclass(model, BaseModel)
                else model.validate_python(obj)
            )
        except ValidationError as e:
            raise InputError(f"{path} line {lineno}: {_explain(e)}") from None
        linenos.append(lineno)
        items.append(item)
    if not items:
        raise InputError(f"{path}: no lines to import")
    return linenos, items


def _relabel(path: Path, linenos: list[int], err: InputError) -> InputError:
    where = f"line {linenos[err.index]}" if err.index is not None else "file"
    return InputError(f"{path} {where}: {err}")


def import_events(ledger: Ledger, path: str | Path, *, source: str = "import") -> list[Event]:
    """Append every event in a JSONL file, or none of them."""
    p = Path(path)
    linenos, items = _parse(p, event_in())
    try:
        return ledger.append_many([item.to_new(source) for item in items])
    except InputError as e:
        raise _relabel(p, linenos, e) from None


def import_subjects(
    ledger: Ledger, path: str | Path, *, since: datetime | None = None, actor: str = "system"
) -> list[Event]:
    """Register every subject in a JSONL file, or none of them."""
    p = Path(path)
    linenos, items = _parse(p, SubjectIn)
    try:
        return ledger.register(items, actor=actor, since=since)
    except InputError as e:
        raise _relabel(p, linenos, e) from None
