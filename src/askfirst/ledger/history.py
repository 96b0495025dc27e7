"""The events that set a subject's state, kept as columns in this process, to fold any
past time for every subject at once.

A decision for everyone as of a past time needs each subject's state as it was then: for
each field, the latest event (for a notice, the first) that set it at or before that time
(:data:`~askfirst.ledger.state.SUBJECT_FIELDS` and :data:`~askfirst.ledger.state.PURPOSE_FIELDS`
say which event sets which field). Folding that in the database reads every event on every
call. Here those events are read once per process and per database and kept as numpy
columns, one *track* per field's event type (choices per purpose, deliveries per purpose
and notice version), in seq order. Each later call reads only the events after the copy's
own head; :func:`state_at` then finds, in one pass over each track the purpose needs, every
subject's last (or first) event with ``recorded_at <= T`` and ``seq <= K``.

The copy is tied to its database by the hash chain: the head it was read up to must
still be there with the same hash, or it is read again from the start. It holds about
28 bytes per event that sets a field on bench/ledger.py's data, subject ids included.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from askfirst.ledger import state as st
from askfirst.ledger import store
from askfirst.ledger.events import Head

if TYPE_CHECKING:  # numpy and pyarrow load where they are used: not on every command
    import numpy as np
    import numpy.typing as npt
    import pyarrow as pa
    from sqlalchemy import Engine

__all__ = ["History", "of", "state_at"]

# A gap of more events than this is read as Arrow (in a second process on a big SQLite
# file, see ``store.read_later``); a smaller one through the engine's own connection.
_ARROW_EVENTS = 20_000
_ASIDE_EVENTS = 50_000
_NULL = -(2**63)  # a NULL notice version (the least int64)
_NONE = 2**63 - 1  # no event yet, while looking for the first (the greatest int64)

# What one track keeps of its events, besides the subject, seq and time: a text value
# (as a code into the history's value list) or a number.
_TEXT, _NUMBER = "value", "notice_version"


@dataclass(frozen=True)
class _Spec:
    """How one track sets fields: from its ``first`` or ``last`` event, each field from
    one attribute (``seq``, ``recorded_at``, ``value`` or ``notice_version``), a value
    put through ``normal`` when the track keeps one."""

    keep: str
    fields: tuple[tuple[str, str], ...]
    normal: Callable[[str | None], str | None] | None = None


_Key = tuple[str, str | None, int | None]  # (event type, purpose, notice version)


def _subject_spec(f: st.SubjectField) -> _Spec:
    fields = ((f.value, _TEXT),) if f.value is not None else ()
    return _Spec("last", (*fields, (f.seq, "seq")), lambda v: st.field_value(f, v))


_SUBJECT_SPECS: dict[str, _Spec] = {f.event.value: _subject_spec(f) for f in st.SUBJECT_FIELDS}
_PURPOSE_SPECS: dict[str, tuple[st.PurposeField, _Spec]] = {
    f.event.value: (f, _Spec(f.keep, f.fields)) for f in st.PURPOSE_FIELDS
}
_TYPES = (*_SUBJECT_SPECS, *_PURPOSE_SPECS)


def _specs_for(purpose: str, version: int) -> Iterator[tuple[_Key, _Spec]]:
    """The tracks that one purpose's state reads, and how each sets its fields."""
    for etype, spec in _SUBJECT_SPECS.items():
        yield (etype, None, None), spec
    for etype, (f, spec) in _PURPOSE_SPECS.items():
        yield (etype, purpose, version if f.current_only else None), spec


class _Column:
    """A numpy array that grows at its end; a view of its first items stays valid as it
    grows (a full buffer is copied to one twice its size, and the view keeps the old)."""

    def __init__(self, dtype: str) -> None:
        import numpy as np

        self._data: npt.NDArray[Any] = np.empty(0, dtype)
        self.size = 0

    def extend(self, values: npt.NDArray[Any]) -> None:
        import numpy as np

        need = self.size + len(values)
        if need > len(self._data):
            grown = np.empty(max(need, 2 * len(self._data), 1024), self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : need] = values
        self.size = need

    def view(self, size: int) -> npt.NDArray[Any]:
        return self._data[:size]

    @property
    def used(self) -> int:
        return self.size * self._data.itemsize

    @property
    def allocated(self) -> int:
        return int(self._data.nbytes)


class _Track:
    """One track's events in seq order: subject (index), seq, time, and what ``spec``
    keeps of each."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        attrs = {attr for _, attr in spec.fields}
        self.columns: dict[str, _Column] = {
            "subject": _Column("int32"),
            "seq": _Column("int64"),
            "recorded_at": _Column("int64"),
        }
        if _TEXT in attrs:
            self.columns[_TEXT] = _Column("int32")
        if _NUMBER in attrs:
            self.columns[_NUMBER] = _Column("int64")

    @property
    def size(self) -> int:
        return self.columns["seq"].size

    def view(self) -> dict[str, npt.NDArray[Any]]:
        n = self.size
        return {name: c.view(n) for name, c in self.columns.items()}


@dataclass(frozen=True)
class _View:
    """One consistent state of a history, safe to read while it grows."""

    seq: int
    subjects: pa.ChunkedArray
    values: pa.Array
    tracks: dict[_Key, dict[str, npt.NDArray[Any]]]


@dataclass(frozen=True)
class Stats:
    """What a history holds, and the memory it takes."""

    seq: int  # the head it was read up to
    events: int  # events held (those that set a field)
    subjects: int
    used_bytes: int  # the columns' items and the subject ids
    allocated_bytes: int  # with the room the columns keep to grow


class History:
    """The events of one database that set a subject's state, as columns; see the module
    docstring. Safe to use from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._seq, self._hash = 0, ""
        self._tracks: dict[_Key, _Track] = {}
        self._subjects: list[pa.Array] = []
        self._subject_count = 0
        self._values: list[str] = []
        self._codes: dict[str, int] = {}

    # ---- keeping up ----------------------------------------------------------------------

    def view(self, engine: Engine, head: Head) -> _View:
        """The history up to at least ``head`` (a head of ``engine``'s ledger), reading
        only the events after the ones it holds."""
        with self._lock:
            if not self._holds(engine, head):
                self._reset()
            if head.seq > self._seq:
                self._add(_read(engine, self._seq, head.seq))
                self._seq, self._hash = head.seq, head.hash
            return self._view()

    def _holds(self, engine: Engine, head: Head) -> bool:
        """Whether the events held are ``engine``'s (the chain through the last one)."""
        if self._seq == 0:
            return True
        if head.seq == self._seq:
            return head.hash == self._hash
        return _hash_at(engine, self._seq) == self._hash

    def _view(self) -> _View:
        import pyarrow as pa

        if len(self._subjects) > 16:  # a refresh adds a chunk: keep take() cheap
            self._subjects = [pa.concat_arrays(self._subjects)]
        return _View(
            self._seq,
            pa.chunked_array(self._subjects, pa.string()),
            pa.array(self._values, pa.string()),
            {key: t.view() for key, t in self._tracks.items()},
        )

    def stats(self) -> Stats:
        with self._lock:
            columns = [c for t in self._tracks.values() for c in t.columns.values()]
            ids = sum(a.nbytes for a in self._subjects)
            return Stats(
                self._seq,
                sum(t.size for t in self._tracks.values()),
                self._subject_count,
                sum(c.used for c in columns) + ids,
                sum(c.allocated for c in columns) + ids,
            )

    # ---- adding events ------------------------------------------------------------------

    def _add(self, events: pa.Table) -> None:
        """Add ``events`` (every later than those held; ``_events_schema``) to the tracks."""
        import numpy as np
        import pyarrow.compute as pc

        if events.num_rows == 0:
            return
        seq = events.column("seq").to_numpy()
        if np.any(np.diff(seq) <= 0):
            order = np.argsort(seq, kind="stable")
            events, seq = events.take(order), seq[order]
        columns = {name: events.column(name).combine_chunks() for name in events.column_names}
        subject = self._subject_index(columns["subject_id"])
        at = columns["recorded_at"].to_numpy()
        types = pc.dictionary_encode(columns["type"])
        type_codes = types.indices.to_numpy()
        for code, etype in enumerate(types.dictionary.to_pylist()):
            rows = np.flatnonzero(type_codes == code)
            for key, spec, picked in _tracks_of(etype, columns, rows):
                track = self._tracks.get(key)
                if track is None:
                    track = self._tracks[key] = _Track(spec)
                into = track.columns
                into["subject"].extend(subject[picked])
                into["seq"].extend(seq[picked])
                into["recorded_at"].extend(at[picked])
                if _TEXT in into:
                    into[_TEXT].extend(self._value_codes(columns[_TEXT].take(picked), spec.normal))
                if _NUMBER in into:
                    number = pc.fill_null(columns[_NUMBER].take(picked), _NULL)
                    into[_NUMBER].extend(number.to_numpy())

    def _subject_index(self, ids: pa.Array) -> npt.NDArray[np.int32]:
        """Each id's index among the subjects held, adding the new ones."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(ids)
        distinct = encoded.dictionary
        index = np.full(len(distinct), -1, np.int64)
        if self._subject_count:
            # Look the (few) new ids up in the (many) held: hashing the few is cheaper.
            held = pa.chunked_array(self._subjects, pa.string())
            found = pc.index_in(held, value_set=distinct)
            where = np.flatnonzero(pc.is_valid(found).to_numpy())
            index[pc.take(found, pa.array(where)).to_numpy()] = where
        new = np.flatnonzero(index < 0)
        if len(new):
            index[new] = np.arange(self._subject_count, self._subject_count + len(new))
            self._subjects.append(distinct.take(pa.array(new)))
            self._subject_count += len(new)
        positions: npt.NDArray[np.intp] = encoded.indices.to_numpy()
        return index[positions].astype(np.int32)

    def _value_codes(
        self, values: pa.Array, normal: Callable[[str | None], str | None] | None
    ) -> npt.NDArray[np.int32]:
        """``values`` (through ``normal``) as codes into the value list, -1 for none."""
        import numpy as np
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(values)
        distinct = [*encoded.dictionary.to_pylist(), None]  # the last stands for NULL
        codes = np.array([self._code(normal(v) if normal else v) for v in distinct], np.int32)
        positions: npt.NDArray[np.intp] = pc.fill_null(
            encoded.indices, len(distinct) - 1
        ).to_numpy()
        return codes[positions]

    def _code(self, value: str | None) -> int:
        if value is None:
            return -1
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._values)
            self._values.append(value)
        return code


def _tracks_of(
    etype: str, columns: dict[str, pa.Array], rows: npt.NDArray[np.intp]
) -> Iterator[tuple[_Key, _Spec, npt.NDArray[np.intp]]]:
    """The tracks that the events at ``rows`` (all of type ``etype``) go to."""
    import pyarrow.compute as pc

    if etype in _SUBJECT_SPECS:
        yield (etype, None, None), _SUBJECT_SPECS[etype], rows
        return
    f, spec = _PURPOSE_SPECS[etype]
    purposes = columns["purpose"].take(rows)
    versions = columns[_NUMBER].take(rows)
    for purpose in pc.unique(purposes).to_pylist():
        if purpose is None:  # (the ledger refuses a choice or a notice without one)
            continue
        same_purpose = _flags(pc.equal(purposes, purpose))
        if not f.current_only:
            yield (etype, purpose, None), spec, rows[same_purpose]
            continue
        for version in pc.unique(versions.filter(same_purpose)).to_pylist():
            if version is not None:
                same = same_purpose & _flags(pc.equal(versions, version))
                yield (etype, purpose, version), spec, rows[same]


def _flags(condition: pa.Array) -> npt.NDArray[np.bool_]:
    import pyarrow.compute as pc

    flags: npt.NDArray[np.bool_] = pc.fill_null(condition, False).to_numpy(zero_copy_only=False)
    return flags


# ---- reading the events ----------------------------------------------------------------------


def _events_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("seq", pa.int64()),
            ("type", pa.string()),
            ("subject_id", pa.string()),
            ("purpose", pa.string()),
            (_TEXT, pa.string()),
            (_NUMBER, pa.int64()),
            ("recorded_at", pa.int64()),
        ]
    )


def _read(engine: Engine, after: int, until: int) -> pa.Table:
    """The events with ``after < seq <= until`` that set a field (seq order not promised)."""
    import pyarrow as pa

    schema = _events_schema()
    types = ", ".join(f"'{t}'" for t in _TYPES)
    sql = (
        f"SELECT {', '.join(schema.names)} FROM events WHERE seq > {int(after)} "
        f"AND seq <= {int(until)} AND type IN ({types})"
    )
    if until - after > _ARROW_EVENTS:
        aside = until - after >= _ASIDE_EVENTS
        with store.read_later(engine, [(sql, schema)], aside=aside) as pending:
            (table,) = pending.result()
        return table
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(sql).fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return pa.table(
        [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
    )


def _hash_at(engine: Engine, seq: int) -> str | None:
    with engine.connect() as conn:
        row = conn.exec_driver_sql(f"SELECT hash FROM events WHERE seq = {int(seq)}").first()
    return None if row is None else str(row[0])


# ---- folding -----------------------------------------------------------------------------------


def fold(view: _View, purpose: str, version: int, at: int, until: int) -> pa.Table:
    """Every subject's state for ``purpose`` (current notice version ``version``) as of
    ``at``, counting no event after seq ``until``, as Arrow (``state.arrow_schema``);
    a subject is in it once an event about it that its state reads was recorded."""
    import numpy as np
    import pyarrow as pa

    n = len(view.subjects)
    present = np.zeros(n, np.bool_)
    picked: dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.int64], bool]] = {}
    for key, spec in _specs_for(purpose, version):
        track = view.tracks.get(key)
        if track is None or len(track["seq"]) == 0:
            continue
        rows = np.flatnonzero((track["seq"] <= until) & (track["recorded_at"] <= at))
        if spec.keep == "last":
            pos = np.full(n, -1, np.int64)
            np.maximum.at(pos, track["subject"][rows], rows)
        else:
            pos = np.full(n, _NONE, np.int64)
            np.minimum.at(pos, track["subject"][rows], rows)
            pos[pos == _NONE] = -1
        present |= pos >= 0
        for name, attr in spec.fields:
            picked[name] = (track[attr], pos, attr == _NUMBER)
    rows = np.flatnonzero(present)
    everyone = len(rows) == n  # (the usual case: no need to pick rows)
    defaults = st.State()
    columns = [view.subjects if everyone else view.subjects.take(pa.array(rows))]
    for f in st.arrow_schema():
        if f.name == "subject_id":
            continue
        column: pa.Array = pa.nulls(len(rows), f.type)
        if f.name in picked:
            source, positions, nullable = picked[f.name]
            pos = positions if everyone else positions[rows]
            missing: npt.NDArray[np.bool_] | None = pos < 0
            if missing is not None and missing.any():
                values = source[np.maximum(pos, 0)]
            else:
                values, missing = source[pos], None
            if pa.types.is_string(f.type):
                none = values < 0 if missing is None else missing | (values < 0)
                column = view.values.take(pa.array(values, pa.int32(), mask=none))
            else:
                if nullable:
                    missing = values == _NULL if missing is None else missing | (values == _NULL)
                column = pa.array(values, f.type, mask=missing)
        default = getattr(defaults, f.name)
        columns.append(column if default is None else column.fill_null(default))
    return pa.table(columns, schema=st.arrow_schema())


# ---- one history per database ----------------------------------------------------------------

_histories: weakref.WeakKeyDictionary[Engine, History] = weakref.WeakKeyDictionary()
_histories_lock = threading.Lock()


def of(engine: Engine) -> History:
    """This process's history of ``engine``'s ledger (made empty on first use)."""
    with _histories_lock:
        history = _histories.get(engine)
        if history is None:
            history = _histories[engine] = History()
        return history


def state_at(engine: Engine, head: Head, purpose: str, version: int, at: int) -> pa.Table:
    """Every subject's state for ``purpose`` as of ``at``, counting no event after
    ``head`` (a head of ``engine``'s ledger), from this process's history of it."""
    view = of(engine).view(engine, head)
    return fold(view, purpose, version, at, head.seq)
