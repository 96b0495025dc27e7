"""What every command shares: the options (--db, --policy, --json), opening the ledger,
and the output.

Output: text and tables for a person at a terminal; when stdout is a pipe, every value
whole, one row per line, tab-separated, so that an id can be copied into the next
command; JSON with ``--json``. A library error becomes one line on stderr and exit code 1.

The library loads inside the commands (``ledger_from``), not when this module does: the
command line answers ``--help`` without loading the ledger, pyarrow or DuckDB.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TextIO, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from askfirst import config, times
from askfirst.errors import AskfirstError, InputError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from askfirst.ledger import Ledger


class Stream:
    """Standard output or standard error: text goes out as it is, one line a call; a
    Rich console (``console``) is made only for what needs one, a table or a progress bar.
    """

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def file(self) -> TextIO:
        # Looked up at each call: a test runner swaps sys.stdout and sys.stderr.
        return sys.stderr if self._stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        return self.file.isatty()

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        return self._console

    def print(self, what: object = "", *, markup: bool = False) -> None:
        """A line of text as it is (``markup``: read Rich's [bold] tags), or a Rich table."""
        if isinstance(what, str) and not markup:
            self.file.write(what + "\n")
        else:
            self.console.print(what)


out = Stream()
err = Stream(stderr=True)

Db = Annotated[
    str,
    typer.Option(
        config.DATABASE_URL.option, envvar=config.DATABASE_URL.env, help=config.DATABASE_URL.help
    ),
]
DB_DEFAULT = config.DATABASE_URL.default or ""
PolicyFile = Annotated[
    Path | None,
    typer.Option(config.POLICY.option, envvar=config.POLICY.env, help=config.POLICY.help),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
KeyDir = Annotated[
    Path,
    typer.Option(config.KEY_DIR.option, envvar=config.KEY_DIR.env, help=config.KEY_DIR.help),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command: ``error: message`` on stderr, and exit code ``code``."""
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


# C0 and C1 control characters: no id, name, purpose or path given on a command line
# holds one (PostgreSQL cannot even look up a text with a NUL in it).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _refuse_control_characters(kwargs: Mapping[str, object]) -> None:
    for name, value in kwargs.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            text = str(v) if isinstance(v, str | Path) else None
            found = _CONTROL.search(text) if text is not None else None
            if found is not None:
                raise InputError(
                    f"{name.replace('_', '-')} {text!r} contains a control character "
                    f"(U+{ord(found[0]):04X})"
                )


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn library errors into one line on stderr and exit code 1; refuse a control
    character in any argument before the command runs."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            _refuse_control_characters(kwargs)
            return fn(*args, **kwargs)
        except AskfirstError as e:
            fail(str(e))
        except SQLAlchemyError as e:
            fail(f"database error: {getattr(e, 'orig', None) or e}".splitlines()[0])

    return wrapper


def ledger_from(
    db: str, policy: Path | None, *, create: bool = False, publishing: bool = False
) -> Ledger:
    """The ledger at ``db``, checked against the policy file (default: the shipped one)
    and the notices published in it (``publishing``: the file may be a version ahead)."""
    from askfirst.policy import load_policy
    from askfirst.propagation import open_ledger

    return open_ledger(db, load_policy(policy), create=create, publishing=publishing)


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time given to ``option``; None when it was not given."""
    if value is None:
        return None
    try:
        return times.parse(value, field=option)
    except ValueError as e:
        raise InputError(str(e)) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _tsv(value: str) -> str:
    """A value as one TSV field: a backslash, tab or line break inside it is escaped."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def print_rows(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    abbreviate: Mapping[str, int] | None = None,
) -> None:
    """A listing: a table at a terminal; when stdout is not one, the header and then one
    row per line, tab-separated, every value whole.

    ``abbreviate``: at a terminal, the ids in these columns (several in a cell are
    separated by ", ") show only their first N characters, which commands also accept.
    """
    if not out.is_terminal:
        for row in [header, *rows]:
            sys.stdout.write("\t".join(_tsv(v) for v in row) + "\n")
        return
    from rich.table import Table

    cut = abbreviate or {}
    table = Table()
    for name in header:
        # At a narrow terminal, a value wraps rather than being cut; an id keeps one line.
        table.add_column(name, overflow="fold", min_width=cut.get(name))
    for row in rows:
        table.add_row(
            *(
                ", ".join(v[: cut[name]] for v in value.split(", ")) if name in cut else value
                for name, value in zip(header, row, strict=True)
            )
        )
    out.print(table)


def progress(quiet: bool) -> Progress | None:
    """A progress bar for a count of records at a terminal; None when quiet or piped."""
    if quiet or not err.is_terminal:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("records"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err.console,
        transient=True,
    )
