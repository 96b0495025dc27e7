"""The gate: turn a corpus into a snapshot holding only what may be used for a purpose.

``corpus`` reads Parquet, JSONL or CSV; ``consent`` takes the decisions and directory
from the ledger, pinned to one head; ``engine_duckdb`` streams the corpus through the
rules; ``redaction`` finds and removes mentions of people who did not say yes;
``manifest`` names the result; ``build`` ties them together and records lineage.
"""

from askfirst.gate.build import build_snapshot, read_snapshot
from askfirst.gate.export import export_decisions
from askfirst.gate.manifest import SnapshotManifest

__all__ = ["SnapshotManifest", "build_snapshot", "export_decisions", "read_snapshot"]
