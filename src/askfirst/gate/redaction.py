"""Finding and removing other people's data inside a record (DESIGN.md rule 6).

A record may name someone other than its author in three ways: the corpus's
``mentions`` list (subject ids), an ``@handle`` in the text, or the known name of a
subject whose names are protected (people without accounts who objected, deceased
members). Handles follow one pattern, the same for DuckDB (RE2) and Python (``re``):
``@`` then ASCII letters, digits, ``_``, ``.`` and ``-``, starting and ending with a
letter, digit or ``_``.

Protected names are found with one Aho-Corasick pass over each batch's lower-cased text
(``ahocorasick_rs``, a DFA over the Arrow buffer: no Python per record); each hit is
then checked for word boundaries. The same pass looks for the first bytes of erased
subjects' names, known only as keyed digests (``forgotten``). Only records that actually
hold a mention of someone who said no are rewritten, one by one, with Python's ``re``
(whole words, any case).
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

from askfirst.gate.forgotten import Forgotten

REDACTED = "[redacted]"
FINAL_SIGMA, SIGMA = "\u03c2", "\u03c3"
# RE2 syntax and Python's (with re.ASCII) read this the same way.
HANDLE_RE = r"@([A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?)"
_HANDLE = re.compile(HANDLE_RE, re.ASCII)


def fold(texts: pa.Array) -> pa.Array:
    """Lower case, and final sigma as sigma: how names and texts are compared."""
    return pc.replace_substring(pc.utf8_lower(texts), FINAL_SIGMA, SIGMA)


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


# _word for each byte below 0x80 (the rest are never looked up as such).
_ASCII_WORD = np.array([_word(chr(b)) if b < 0x80 else False for b in range(256)])


def _non_ascii(texts: pa.Array) -> np.ndarray | None:
    """Which rows of ``texts`` hold a character beyond ASCII; None if none does.

    Read off the bytes with numpy: a whole batch at once first (the usual answer), then
    row by row. Arrow's ``string_is_ascii`` took eight times as long.
    """
    if texts.offset:
        texts = pa.concat_arrays([texts])
    data = texts.buffers()[2]
    if data is None or len(texts) == 0:
        return None
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[: len(texts) + 1]
    hay = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]
    if hay.size == 0 or hay.max() < 0x80:
        return None
    # The largest byte of each row that has any: a row's bytes run up to the start of
    # the next row with bytes (rows in between are empty).
    full = np.flatnonzero(np.diff(offsets) > 0)
    peaks = np.zeros(len(texts), dtype=np.uint8)
    peaks[full] = np.maximum.reduceat(hay, (offsets[full] - offsets[0]).astype(np.intp))
    return peaks >= 0x80


@dataclass
class Found:
    """What a search found: for each hit its record, its subject, and — for an erased
    subject's name, which is known nowhere else — the text found (None for a protected
    name: all the subject's names are redacted)."""

    rows: list[int] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)

    def extend(self, other: Found) -> None:
        self.rows += other.rows
        self.subjects += other.subjects
        self.texts += other.texts


@dataclass
class NameFinder:
    """An automaton over the lower-cased protected names, and who each name belongs to;
    and over the first bytes of forgotten names, if any (``forgotten``)."""

    names: list[str] = field(default_factory=list)
    owners: list[list[str]] = field(default_factory=list)
    names_of: dict[str, list[str]] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)  # protected subjects who said yes
    forgotten: Forgotten | None = None
    _automaton: ahocorasick_rs.BytesAhoCorasick | None = None

    @classmethod
    def from_directory(cls, directory: pa.Table, forgotten: Forgotten | None = None) -> NameFinder:
        protected = directory.filter(pc.equal(directory.column("protected"), 1))
        names_of: dict[str, list[str]] = {}
        flat_subjects: list[str] = []
        flat_names: list[str] = []
        for subject, names in zip(
            protected.column("subject").to_pylist(),
            protected.column("names").to_pylist(),
            strict=True,
        ):
            for name in json.loads(names or "[]"):
                if name.strip():
                    names_of.setdefault(subject, []).append(name.strip())
                    flat_subjects.append(subject)
                    flat_names.append(name.strip())
        # The texts are lower-cased by Arrow, so the names are too. Python lower-cases a
        # few letters differently (the Turkish dotted I: "İ" is "i" to Arrow, "i̇" to
        # Python), and a text may hold either form already lower-cased, so each name
        # is looked for in both.
        by_name: dict[str, list[str]] = {}
        arrow = fold(pa.array(flat_names, pa.string())).to_pylist()
        python = fold(pa.array([n.lower() for n in flat_names], pa.string())).to_pylist()
        for subject, *keys in zip(flat_subjects, arrow, python, strict=True):
            for key in dict.fromkeys(keys):
                by_name.setdefault(key, []).append(subject)
        finder = cls(list(by_name), [sorted(set(v)) for v in by_name.values()], names_of)
        finder.forgotten = forgotten
        patterns = [n.encode() for n in finder.names]
        if forgotten is not None:
            patterns += forgotten.prefixes  # pattern k >= len(names): a forgotten name's
        if patterns:
            finder._automaton = ahocorasick_rs.BytesAhoCorasick(
                patterns,
                matchkind=ahocorasick_rs.MatchKind.Standard,
                implementation=ahocorasick_rs.Implementation.DFA,
            )
        return finder

    def allow(self, decisions: pa.Table) -> None:
        """Note which protected subjects may be used (their names are kept)."""
        if not self.names_of:
            return
        mine = decisions.filter(
            pc.and_(
                pc.is_in(decisions.column("subject"), pa.array(list(self.names_of), pa.string())),
                decisions.column("allowed"),
            )
        )
        self.allowed = set(mine.column("subject").to_pylist())

    def find(self, texts: pa.Array) -> tuple[list[int], list[str]]:
        """(row, subject) pairs: the protected (and forgotten) names that occur, as whole
        words, in each row of ``texts``."""
        found = self.search(texts)
        return found.rows, found.subjects

    def search(self, texts: pa.Array) -> Found:
        """:meth:`find`, with the text of each forgotten name found."""
        if self._automaton is None or len(texts) == 0:
            return Found()
        if texts.type != pa.string():  # the byte-level reads below take 32-bit offsets
            texts = texts.cast(pa.string())
        # On ASCII text, folding is lower-casing A-Z, which Arrow does several times
        # faster; rows with other characters are folded in full.
        other = _non_ascii(texts)
        if other is None:
            return self._scan(pc.ascii_lower(texts), None, texts)
        if 2 * int(other.sum()) > len(texts):
            return self._scan(fold(texts), None, texts)
        ascii_rows = np.flatnonzero(np.logical_not(other))
        other_rows = np.flatnonzero(other)
        found = self._scan(pc.ascii_lower(texts.take(ascii_rows)), ascii_rows, texts)
        found.extend(self._scan(fold(texts.take(other_rows)), other_rows, texts))
        return found

    def _scan(self, lowered: pa.Array, rows_of: np.ndarray | None, texts: pa.Array) -> Found:
        """``search`` over folded text; a hit in row k is reported as ``rows_of[k]``."""
        out = Found()
        if self._automaton is None or len(lowered) == 0:
            return out
        if lowered.offset:
            lowered = pa.concat_arrays([lowered])
        offsets = np.frombuffer(lowered.buffers()[1], dtype=np.int32)[: len(lowered) + 1]
        data = lowered.buffers()[2]
        if data is None:
            return out
        hay = np.frombuffer(data, dtype=np.uint8)
        hits = self._automaton.find_matches_as_indexes(cast(Any, hay), overlapping=True)
        if not hits:
            return out
        found = np.array(hits, dtype=np.int64).reshape(-1, 3)
        which = np.searchsorted(offsets, found[:, 1], side="right") - 1
        # A hit that runs past its record's end spans two records: not a mention.
        inside = found[:, 2] <= offsets[which + 1]
        found, which = found[inside], which[inside]
        if self.forgotten is not None:
            prefix = found[:, 0] >= len(self.names)
            if prefix.any():
                self._forgotten(hay, offsets, found[prefix], which[prefix], rows_of, texts, out)
                found, which = found[~prefix], which[~prefix]
                if found.size == 0:
                    return out
        pattern, start, end = found[:, 0], found[:, 1], found[:, 2]
        # Whole words only. Where the bytes either side are ASCII (or the record ends),
        # they are checked here at once; the few others are decoded one by one.
        has_before = start > offsets[which]
        has_after = end < offsets[which + 1]
        before = hay[np.where(has_before, start - 1, 0)]
        after = hay[np.where(has_after, np.minimum(end, len(hay) - 1), 0)]
        unsure = (has_before & (before >= 0x80)) | (has_after & (after >= 0x80))
        word = (has_before & _ASCII_WORD[before]) | (has_after & _ASCII_WORD[after])
        for k in np.flatnonzero(unsure).tolist():
            lo, hi = int(offsets[which[k]]), int(offsets[which[k] + 1])
            b = bytes(hay[max(lo, start[k] - 4) : start[k]]).decode("utf-8", "ignore")[-1:]
            a = bytes(hay[end[k] : min(hi, end[k] + 4)]).decode("utf-8", "ignore")[:1]
            word[k] = bool((b and _word(b)) or (a and _word(a)))
        whole = np.logical_not(word)
        # Each (row, name) once (sorted by row, then name).
        pairs = np.unique(np.stack([which[whole], pattern[whole]], axis=1), axis=0)
        for row, name in pairs.tolist():
            at = row if rows_of is None else int(rows_of[row])
            for subject in self.owners[name]:
                out.rows.append(at)
                out.subjects.append(subject)
                out.texts.append(None)
        return out

    def _forgotten(
        self,
        hay: np.ndarray,
        offsets: np.ndarray,
        found: np.ndarray,
        which: np.ndarray,
        rows_of: np.ndarray | None,
        texts: pa.Array,
        out: Found,
    ) -> None:
        """Where a forgotten name's first bytes start a word, check what follows: each
        forgotten name found there as a whole word goes to ``out`` with its text."""
        assert self.forgotten is not None
        pattern, start = found[:, 0] - len(self.names), found[:, 1]
        lo, hi = offsets[which].astype(np.int64), offsets[which + 1].astype(np.int64)
        has_before = start > lo
        before = hay[np.where(has_before, start - 1, 0)]
        keep = np.logical_not(has_before & _ASCII_WORD[before])
        for k in np.flatnonzero(keep & has_before & (before >= 0x80)).tolist():
            keep[k] = not _word(_char_before(hay, int(lo[k]), int(start[k])))
        sel = np.flatnonzero(keep)
        hits, ends, subjects = self.forgotten.names_at(hay, start[sel], pattern[sel], hi[sel])
        seen: set[tuple[int, str, str]] = set()
        for h, end, subject in zip(hits, ends, subjects, strict=True):
            k = int(sel[h])
            s, row, row_lo, row_hi = int(start[k]), int(which[k]), int(lo[k]), int(hi[k])
            if end < row_hi and _word(_char_at(hay, end, row_hi)):
                continue
            # Folding keeps one character for one: the same characters of the text.
            at = row if rows_of is None else int(rows_of[row])
            skip = len(hay[row_lo:s].tobytes().decode("utf-8", "replace"))
            size = len(hay[s:end].tobytes().decode("utf-8", "replace"))
            text = str(texts[at].as_py())[skip : skip + size]
            if (at, subject, text) not in seen:
                seen.add((at, subject, text))
                out.rows.append(at)
                out.subjects.append(subject)
                out.texts.append(text)


def _char_before(hay: np.ndarray, lo: int, at: int) -> str:
    return bytes(hay[max(lo, at - 4) : at]).decode("utf-8", "ignore")[-1:]


def _char_at(hay: np.ndarray, at: int, hi: int) -> str:
    return bytes(hay[at : min(hi, at + 4)]).decode("utf-8", "ignore")[:1]


def _spans(text: str, name: str) -> list[tuple[int, int]]:
    """Where ``name`` occurs in ``text`` as a whole word, in any case."""
    lowered = text.lower().replace(FINAL_SIGMA, SIGMA)
    key = name.lower().replace(FINAL_SIGMA, SIGMA)
    if len(lowered) != len(text):  # lower-casing moved characters: use the slow, sure way
        pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
        return [m.span() for m in pattern.finditer(text)]
    out = []
    at = lowered.find(key)
    while at >= 0:
        end = at + len(key)
        if not (at > 0 and _word(text[at - 1])) and not (end < len(text) and _word(text[end])):
            out.append((at, end))
        at = lowered.find(key, at + 1)
    return out


def redact(text: str, handles: Iterable[str], names: Iterable[str]) -> str:
    """``text`` with every ``@handle`` in ``handles`` and every name in ``names`` (whole
    words, any case) replaced by ``[redacted]``."""
    bad_handles = {h.lower() for h in handles}
    if bad_handles:
        text = _HANDLE.sub(
            lambda m: REDACTED if m.group(1).lower() in bad_handles else m.group(0), text
        )
    spans: list[tuple[int, int]] = []
    for name in {n.strip() for n in names if n.strip()}:
        spans.extend(_spans(text, name))
    if not spans:
        return text
    # Longest first where names overlap ("Anna Keller" over "Anna"), then left to right.
    spans.sort(key=lambda s: (s[0], -s[1]))
    parts, last = [], 0
    for start, end in spans:
        if start < last:
            continue
        parts.append(text[last:start])
        parts.append(REDACTED)
        last = end
    parts.append(text[last:])
    return "".join(parts)
