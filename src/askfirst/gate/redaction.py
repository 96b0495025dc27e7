"""Finding and removing other people's data inside a record (DESIGN.md rule 6).

A record may name someone other than its author in three ways: the corpus's
``mentions`` list (subject ids), an ``@handle`` in the text, or the known name of a
subject whose names are protected (people without accounts who objected, deceased
members). Handles follow one pattern, the same for DuckDB (RE2) and Python (``re``):
``@`` then ASCII letters, digits, ``_``, ``.`` and ``-``, starting and ending with a
letter, digit or ``_``.

Protected names are found with one Aho-Corasick pass over each batch's lower-cased text
(``ahocorasick_rs``, a DFA over the Arrow buffer: no Python per record); each hit is
then checked for word boundaries. Only records that actually hold a mention of someone
who said no are rewritten, one by one, with Python's ``re`` (whole words, any case).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import ahocorasick_rs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REDACTED = "[redacted]"
# RE2 syntax and Python's (with re.ASCII) read this the same way.
HANDLE_RE = r"@([A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?)"
_HANDLE = re.compile(HANDLE_RE, re.ASCII)


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


@dataclass
class NameFinder:
    """An automaton over the lower-cased protected names, and who each name belongs to."""

    names: list[str] = field(default_factory=list)
    owners: list[list[str]] = field(default_factory=list)
    _automaton: ahocorasick_rs.BytesAhoCorasick | None = None

    @classmethod
    def from_directory(cls, directory: pa.Table) -> NameFinder:
        protected = directory.filter(pc.equal(directory.column("protected"), 1))
        by_name: dict[str, list[str]] = {}
        for subject, names in zip(
            protected.column("subject").to_pylist(),
            protected.column("names").to_pylist(),
            strict=True,
        ):
            for name in json.loads(names or "[]"):
                key = name.strip().lower()
                if key:
                    by_name.setdefault(key, []).append(subject)
        finder = cls(list(by_name), [sorted(set(v)) for v in by_name.values()])
        if finder.names:
            finder._automaton = ahocorasick_rs.BytesAhoCorasick(
                [n.encode() for n in finder.names],
                matchkind=ahocorasick_rs.MatchKind.Standard,
                implementation=ahocorasick_rs.Implementation.DFA,
            )
        return finder

    def find(self, texts: pa.Array) -> tuple[list[int], list[str]]:
        """(row, subject) pairs: the protected names that occur, as whole words, in each
        row of ``texts``."""
        rows: list[int] = []
        subjects: list[str] = []
        if self._automaton is None or len(texts) == 0:
            return rows, subjects
        lowered = pc.utf8_lower(texts)
        if lowered.offset:
            lowered = pa.concat_arrays([lowered])
        offsets = np.frombuffer(lowered.buffers()[1], dtype=np.int32)[: len(lowered) + 1]
        data = lowered.buffers()[2]
        if data is None:
            return rows, subjects
        hay = np.frombuffer(data, dtype=np.uint8)
        hits = self._automaton.find_matches_as_indexes(cast(Any, hay), overlapping=True)
        if not hits:
            return rows, subjects
        seen: set[tuple[int, int]] = set()
        for pattern, start, end in hits:
            row = int(np.searchsorted(offsets, start, side="right")) - 1
            lo, hi = int(offsets[row]), int(offsets[row + 1])
            if end > hi or (row, pattern) in seen:
                continue  # spans two records, or already counted
            before = bytes(hay[lo:start]).decode("utf-8", "replace")[-1:]
            after = bytes(hay[end:hi]).decode("utf-8", "replace")[:1]
            if (before and _word(before)) or (after and _word(after)):
                continue
            seen.add((row, pattern))
            for subject in self.owners[pattern]:
                rows.append(row)
                subjects.append(subject)
        return rows, subjects


def redact(text: str, handles: Iterable[str], names: Iterable[str]) -> str:
    """``text`` with every ``@handle`` in ``handles`` and every name in ``names`` (whole
    words, any case) replaced by ``[redacted]``."""
    bad_handles = {h.lower() for h in handles}
    if bad_handles:
        text = _HANDLE.sub(
            lambda m: REDACTED if m.group(1).lower() in bad_handles else m.group(0), text
        )
    wanted = sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True)
    if wanted:
        pattern = "|".join(re.escape(n) for n in wanted)
        text = re.sub(rf"(?<!\w)(?:{pattern})(?!\w)", REDACTED, text, flags=re.IGNORECASE)
    return text
