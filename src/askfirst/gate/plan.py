"""The values a gate engine takes and gives back, the same for every engine."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

from askfirst.decisions import ALLOWED, Reason
from askfirst.gate.consent import Consent
from askfirst.gate.corpus import Corpus
from askfirst.policy import NEVER_USED

# What a snapshot's data files hold: no author id, nothing else about anyone. The shard
# key is a 16-bit bucket of the author (see ``shard_key``): training sharded by
# ``shard_key % N`` keeps each author's records in one shard, so that unlearning one
# member retrains one shard (SISA), and a task can name it.
OUTPUT_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("category", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("text", pa.string()),
        ("shard_key", pa.int32()),
    ]
)
SHARD_KEYS = 65_536
# The most shard keys lineage lists for one mentioned subject; beyond it, "every shard".
MAX_MENTION_KEYS = 256


def shard_key(author_id: str) -> int:
    """The author's shard key: the first two bytes of MD5(author id), little-endian
    (what DuckDB's ``md5_number(author_id) & 65535`` gives)."""
    return int.from_bytes(hashlib.md5(author_id.encode()).digest()[:2], "little")


def shards_of(keys: list[int], shards: int) -> list[int]:
    """The shards (of ``shards``) that records with these shard keys fall in."""
    return sorted({k % shards for k in keys})


# Every reason a record can be left out for, in the order the gate checks them: a
# record is counted under the first that applies.
EXCLUSION_REASONS: tuple[str, ...] = (
    "malformed",
    "category-never-used",
    "category-not-allowed",
    "created-after-as-of",
    *(str(r) for r in Reason if r not in ALLOWED),
    "mention-not-consented",
)
ON_MENTION = ("redact", "drop")
# Records that may mention someone wait until this many have gathered, then go through
# the mention query together (it joins tables as big as the subjects), at most this
# many and this much of their text at a time (its memory grows with both).
MENTION_ROWS = 131_072
MENTION_BYTES = 32 << 20


@dataclass(frozen=True)
class Plan:
    """One build: the corpus, what the ledger says, and how to treat mentions."""

    consent: Consent
    corpus: Corpus
    on_mention: str = "redact"
    never_used: tuple[str, ...] = tuple(NEVER_USED)
    batch_rows: int = 262_144
    mention_rows: int = MENTION_ROWS
    mention_bytes: int = MENTION_BYTES
    rows_per_file: int = 4_000_000
    memory_limit: str = "512MB"  # DuckDB's share; below ~512MB 2M-subject tables fail


@dataclass(frozen=True)
class Outcome:
    """What an engine did: counts, the content digest, the files and the lineage."""

    input_records: int
    output_records: int
    excluded: dict[str, int]
    redacted_mentions: int
    digest: list[int]  # four sums of 32-bit slices of each record's MD5
    files: list[str]
    lineage: pa.Table  # subject_id, author_records, mention_records, mention_keys
    by_category: dict[str, int]  # records written, by category
