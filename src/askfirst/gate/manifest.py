"""The snapshot manifest: what went in, what came out, and against which ledger and policy.

The snapshot id is a content hash: SHA-256 over the build's inputs (purpose, as-of time,
policy hash, ledger head, mention rule) and an order-free digest of the records written
(the count and four sums of 32-bit slices of each record's MD5, which DuckDB and Spark
both compute natively). The same corpus, ledger head and policy give the same id, on
any engine and however the records were split into files.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

FORMAT = "askfirst-snapshot/2"  # /2: records carry a shard key


class LedgerHeadRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int
    hash: str


class SnapshotManifest(BaseModel):
    """``DIR/manifest.json``."""

    model_config = ConfigDict(frozen=True)

    format: str = FORMAT
    snapshot_id: str
    purpose: str
    purpose_version: int
    as_of: str
    policy_hash: str
    ledger_head: LedgerHeadRef
    engine: str
    on_mention: str
    corpus: str
    input_records: int
    output_records: int
    output_by_category: dict[str, int] = {}
    excluded: dict[str, int]
    redacted_mentions: int
    subjects_as_author: int
    subjects_as_mention: int
    files: list[str]
    started_at: str
    finished_at: str

    @property
    def head_seq(self) -> int:
        return self.ledger_head.seq

    @property
    def head_hash(self) -> str:
        return self.ledger_head.hash

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def snapshot_id(
    *,
    purpose: str,
    as_of: int,
    policy_hash: str,
    head_seq: int,
    head_hash: str,
    on_mention: str,
    records: int,
    digest: list[int],
) -> str:
    body = {
        "format": FORMAT,
        "purpose": purpose,
        "as_of": as_of,
        "policy_hash": policy_hash,
        "ledger_head": [head_seq, head_hash],
        "on_mention": on_mention,
        "records": records,
        "digest": digest,
    }
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
