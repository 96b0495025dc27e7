"""An erased subject's names and handles, found in others' records without being known.

The ledger keeps them only as keyed digests (``askfirst.directory``): for each, a digest
of the whole value and, sealed under the same key, its length and first few bytes. With
the key, a build reads those prefixes and looks for them in the same Aho-Corasick pass
that finds protected names (``redaction.NameFinder``); only where one starts a word does
it hash the bytes that follow, the value's length of them, and compare the digest. So a
forgotten name is found exactly where a protected name of that spelling would be (whole
words, any case), and the cost is one digest per place a prefix starts a word.

Handles are found as the mention step finds every ``@handle``: each one there is hashed
and compared. A handle erased and later taken by someone else stands for that someone in
records written after the erasure, and for the erased subject in records before it.

Every build that has any forgotten row needs the key; without it, or with another one,
nothing is built (fail closed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from askfirst import config, directory
from askfirst.errors import InputError


def key_folder(key_dir: str | Path | None) -> Path:
    """The key folder a build reads the names key from: ``key_dir``, else the setting
    (``ASKFIRST_KEY_DIR``), else its default."""
    if key_dir is not None:
        return Path(key_dir)
    return Path(os.environ.get(config.KEY_DIR.env) or config.KEY_DIR.default or ".")


@dataclass
class Forgotten:
    """The forgotten values one build looks for, read with the names key."""

    key: bytes
    rows: pa.Table  # directory.forgotten_rows(): digest, subject, forgotten_at
    prefixes: list[bytes] = field(default_factory=list)  # the automaton's patterns
    # For the names with the k-th prefix: the lengths they have (``_lengths[_first[k]:
    # _first[k] + _count[k]]``).
    _first: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # (length << 31 | polynomial hash) of every forgotten name, sorted; and what each is
    _keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _names: dict[int, list[tuple[bytes, str]]] = field(default_factory=dict)
    _base: int = 2
    _powers: dict[int, np.ndarray] = field(default_factory=dict)
    handles: dict[bytes, tuple[str, int]] = field(default_factory=dict)  # digest -> who, when
    _seen: dict[str, tuple[str, int] | None] = field(default_factory=dict)

    @classmethod
    def load(cls, rows: pa.Table, key_dir: str | Path | None) -> Forgotten:
        """The build's forgotten values; InputError when the key is missing or not the
        one they were made with."""
        folder = key_folder(key_dir)
        n = rows.num_rows
        try:
            key = directory.names_key(folder, create=False)
        except InputError as e:
            raise InputError(
                f"the ledger keeps {n} forgotten name(s) of erased subjects as keyed digests, "
                f"and the build cannot read them ({e}); give the key folder the service uses "
                "(--key-dir or ASKFIRST_KEY_DIR); nothing was built"
            ) from None
        return cls.from_rows(key, rows)

    @classmethod
    def from_rows(cls, key: bytes, rows: pa.Table) -> Forgotten:
        found = cls(key, rows, _base=directory.poly_base(key))
        lengths: dict[bytes, set[int]] = {}
        subjects = rows.column("subject").to_pylist()
        stamps = rows.column("forgotten_at").to_pylist()
        bad = 0
        for digest, subject, at in zip(
            rows.column("digest").to_pylist(), subjects, stamps, strict=True
        ):
            opened = directory.open_sealed(key, digest)
            if opened is None:
                bad += 1
            elif opened.kind == directory.HANDLE:
                found.handles[opened.tag] = (subject, at)
            else:
                lengths.setdefault(opened.prefix, set()).add(opened.length)
                k = opened.length << 31 | opened.poly
                found._names.setdefault(k, []).append((opened.tag, subject))
        if bad:
            raise InputError(
                f"{bad} of {rows.num_rows} forgotten name(s) were not made with the names key "
                "in the key folder given; give the folder the service uses (--key-dir or "
                "ASKFIRST_KEY_DIR); nothing was built"
            )
        found.prefixes = list(lengths)
        counts = [len(v) for v in lengths.values()]
        found._count = np.array(counts, np.int64)
        found._first = np.cumsum([0, *counts[:-1]]).astype(np.int64)
        found._lengths = np.array([n for v in lengths.values() for n in sorted(v)], np.int64)
        found._keys = np.array(sorted(found._names), np.int64)
        return found

    def names_at(
        self, hay: np.ndarray, start: np.ndarray, prefix: np.ndarray, stop: np.ndarray
    ) -> tuple[list[int], list[int], list[str]]:
        """(hit, end, subject) for each forgotten name that ``hay[start[hit]:end]`` is,
        where the ``prefix[hit]``-th pattern was found at ``start[hit]``, in a record that
        ends at ``stop[hit]``. The length and the polynomial hash of every candidate are
        checked at once; the keyed digest only where both match."""
        counts = self._count[prefix]
        hit = np.repeat(np.arange(len(start)), counts)
        within = np.arange(hit.size) - np.repeat(np.cumsum(counts) - counts, counts)
        length = self._lengths[np.repeat(self._first[prefix], counts) + within]
        fits = start[hit] + length <= stop[hit]
        hit, length = hit[fits], length[fits]
        hits: list[int] = []
        ends: list[int] = []
        subjects: list[str] = []
        for n in np.unique(length).tolist():
            mine = hit[length == n]
            first = start[mine]
            # Each candidate's bytes, one row each; their polynomial at the secret base
            # as a dot product (each term < 2**39, so the sums fit in 64 bits).
            block = hay[first[:, None] + np.arange(n)].astype(np.int64)
            value = (block @ self._weights(n)) % directory.POLY_MOD
            k = np.int64(n) << 31 | value
            at = np.searchsorted(self._keys, k)
            match = (at < self._keys.size) & (self._keys[np.minimum(at, self._keys.size - 1)] == k)
            for j in np.flatnonzero(match).tolist():
                s = int(first[j])
                digest = directory.tag(self.key, directory.NAME, hay[s : s + n].tobytes())
                for t, subject in self._names[int(k[j])]:
                    if t == digest:
                        hits.append(int(mine[j]))
                        ends.append(s + n)
                        subjects.append(subject)
        return hits, ends, subjects

    def _weights(self, n: int) -> np.ndarray:
        """base**(n-1), ..., base, 1, modulo 2**31 - 1."""
        if n not in self._powers:
            w = [1]
            for _ in range(n - 1):
                w.append(w[-1] * self._base % directory.POLY_MOD)
            self._powers[n] = np.array(w[::-1], np.int64)
        return self._powers[n]

    def handle(self, handle: str) -> tuple[str, int] | None:
        """Whose forgotten handle ``handle`` (lower case) is, and when it was forgotten."""
        if not self.handles:
            return None
        if handle not in self._seen:
            if len(self._seen) > 1_000_000:  # a bound on memory, whatever the corpus
                self._seen.clear()
            digest = directory.tag(self.key, directory.HANDLE, handle.encode())
            self._seen[handle] = self.handles.get(digest)
        return self._seen[handle]
