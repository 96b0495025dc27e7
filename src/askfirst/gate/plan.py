"""The values a gate engine takes and gives back, the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from askfirst.gate.consent import Consent
from askfirst.gate.corpus import Corpus
from askfirst.policy import NEVER_USED

# What a snapshot's data files hold: no author id, nothing else about anyone. The shard
# key is a 16-bit bucket of the author (``lineage.shard_key``).
OUTPUT_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("category", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("text", pa.string()),
        ("shard_key", pa.int32()),
    ]
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
