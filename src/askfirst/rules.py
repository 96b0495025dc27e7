"""The rules, each written once, as data; every evaluator is generated from them.

- :data:`RULES` is DESIGN.md's decision order for (subject, purpose, time): each row has
  its reason, the state field naming the ledger event it rests on, a Python predicate
  over one subject's :class:`~askfirst.ledger.state.State`, and an SQL condition over
  the same fields as columns. :func:`evaluate` walks the rows for one subject;
  :func:`evaluate_many` compiles them into one DuckDB ``CASE`` over Arrow columns.
- :data:`RECORD_RULES` is the gate's order for one corpus record: each row a reason and
  an SQL condition that DuckDB and Spark SQL both read (:func:`record_reason_sql`
  spells the few functions whose names differ).
- :func:`both_yes` is the reaching-back rule: yes only where yes at the as-of time and
  at the ledger head.

Adding a rule is one row here; a test shows that every row changes a decision in every
evaluator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from askfirst import notices, times
from askfirst.ledger.state import State
from askfirst.policy import NEVER_USED, Policy, Purpose

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


class Reason(StrEnum):
    UNKNOWN_SUBJECT = "unknown-subject"
    ERASED = "erased"
    ACCOUNT_CLOSED = "account-closed"
    DECEASED = "deceased"
    MINOR = "minor"
    WITHDRAWN = "withdrawn"
    GPC = "gpc"
    RECONSENT_NEEDED = "reconsent-needed"
    GRANTED = "granted"
    NO_CONSENT = "no-consent"
    DEFAULT_OFF = "default-off"
    NOTICE_PENDING = "notice-pending"
    DEFAULT_AFTER_NOTICE = "default-after-notice"


@dataclass(frozen=True)
class Context:
    """What a rule reads besides the subject's state: the policy, the purpose, the time."""

    policy: Policy
    purpose: Purpose
    at: int  # microseconds

    def regime(self, s: State) -> str:
        return str(self.policy.regime(s.jurisdiction))

    def sql_params(self) -> dict[str, Any]:
        """The values :data:`RULES`' SQL conditions name (``$at`` and so on)."""
        p = self.purpose
        return {
            "at": self.at,
            "gpc": p.honours_gpc,
            "versions": sorted(p.grant_versions),
            "default_off": p.default == "off",
            "grace": p.grace_days * times.DAY_US,
            "not_before": self.not_before,
        }

    @property
    def not_before(self) -> int:
        """No default of this purpose applies before this instant (its published date)."""
        return self.policy.not_before.get(self.purpose.name, 0)


def is_minor(value: str | None, at: int) -> bool:
    """A ``minor`` state value (``true``, ``false``, ``until:DATE``) read at ``at``."""
    if value == "true":
        return True
    if value and value.startswith("until:"):
        return at < times.to_micros(times.parse(value[6:]))
    return False


def _gpc_wins(s: State, c: Context) -> bool:
    return (
        c.purpose.honours_gpc
        and s.gpc_seq is not None
        and (s.choice_seq is None or s.gpc_seq > s.choice_seq)
    )


@dataclass(frozen=True)
class Rule:
    """One step of DESIGN.md's order: if ``applies``, the decision is ``reason``, resting
    on the event whose seq is in the state field ``rests_on``."""

    reason: Reason
    allowed: bool
    rests_on: str | None
    applies: Callable[[State, Context], bool]
    sql: str  # the same condition over the state's columns, and ``regime``
    says: str  # the reason in words, for people


RULES: tuple[Rule, ...] = (
    Rule(
        Reason.UNKNOWN_SUBJECT, False, None,
        lambda s, c: s.registered_seq is None,
        "registered_seq IS NULL",
        "askfirst does not know this subject, so nothing is used",
    ),
    Rule(
        Reason.ERASED, False, "status_seq",
        lambda s, c: s.status == "erased",
        "status = 'erased'",
        "this person asked to be forgotten, and was",
    ),
    Rule(
        Reason.ACCOUNT_CLOSED, False, "status_seq",
        lambda s, c: s.status in ("closed", "deactivated"),
        "status IN ('closed', 'deactivated')",
        "the account is closed or deactivated",
    ),
    Rule(
        Reason.DECEASED, False, "status_seq",
        lambda s, c: s.status == "deceased",
        "status = 'deceased'",
        "the member has died",
    ),
    Rule(
        Reason.MINOR, False, "minor_seq",
        lambda s, c: is_minor(s.minor, c.at),
        "CASE WHEN minor = 'true' THEN true WHEN minor LIKE 'until:%' "
        "THEN $at < epoch_us(CAST(substr(minor, 7) AS TIMESTAMP)) ELSE false END",
        "the member is under 18",
    ),
    Rule(
        Reason.GPC, False, "gpc_seq",
        _gpc_wins,
        "$gpc AND gpc_seq IS NOT NULL AND (choice_seq IS NULL OR gpc_seq > choice_seq)",
        "their browser sent a Global Privacy Control signal after their last choice",
    ),
    Rule(
        Reason.WITHDRAWN, False, "choice_seq",
        lambda s, c: s.choice_seq is not None and s.choice_action in ("withdraw", "object"),
        "choice_seq IS NOT NULL AND choice_action IN ('withdraw', 'object')",
        "they said no",
    ),
    Rule(
        Reason.RECONSENT_NEEDED, False, "choice_seq",
        lambda s, c: s.choice_seq is not None
        and s.choice_version not in c.purpose.grant_versions,
        "choice_seq IS NOT NULL AND NOT coalesce(list_contains($versions, choice_version), false)",
        "they said yes to an earlier, narrower version of this purpose",
    ),
    Rule(
        Reason.GRANTED, True, "choice_seq",
        lambda s, c: s.choice_seq is not None,
        "choice_seq IS NOT NULL",
        "they said yes",
    ),
    Rule(
        Reason.NO_CONSENT, False, "jurisdiction_seq",
        lambda s, c: c.regime(s) == "opt-in",
        "regime = 'opt-in'",
        "where they live, consent is needed first, and they have not given it",
    ),
    Rule(
        Reason.DEFAULT_OFF, False, "jurisdiction_seq",
        lambda s, c: c.purpose.default == "off",
        "$default_off",
        "they made no choice and this purpose is off by default",
    ),
    Rule(
        Reason.NOTICE_PENDING, False, "notice_seq",
        lambda s, c: s.notice_at is None
        or c.at < notices.default_starts(c.purpose, c.policy, s.notice_at),
        "notice_at IS NULL OR notice_at > $at - $grace OR $at < $not_before",
        "the current notice was not delivered to them long enough ago, or its default "
        "has not started yet",
    ),
    Rule(
        Reason.DEFAULT_AFTER_NOTICE, True, "notice_seq",
        lambda s, c: True,
        "true",
        "they were told, had time to say no, and did not",
    ),
)  # fmt: skip

ALLOWED = frozenset(r.reason for r in RULES if r.allowed)
EXPLAIN: dict[Reason, str] = {r.reason: r.says for r in RULES}


def evaluate(
    s: State, context: Context, rules: Sequence[Rule] = RULES
) -> tuple[Reason, int | None]:
    """The first rule that applies to one subject: its reason and the event it rests on."""
    for rule in rules:
        if rule.applies(s, context):
            return rule.reason, getattr(s, rule.rests_on) if rule.rests_on else None
    raise AssertionError("the last rule always applies")  # pragma: no cover


def decisions_schema() -> pa.Schema:
    """Decisions as Arrow, for every evaluator and engine."""
    import pyarrow as pa

    return pa.schema(
        [
            ("subject", pa.string()),
            ("allowed", pa.bool_()),
            ("reason", pa.string()),
            ("event_seq", pa.int64()),
        ]
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _evaluate_sql(rules: Sequence[Rule]) -> str:
    """One DuckDB query applying ``rules`` in order to table ``state``, for the subjects
    in table ``q``, with the regimes of table ``regimes``."""
    reasons = "\n    ".join(f"WHEN {r.sql} THEN {_quote(r.reason)}" for r in rules)
    seqs = "\n    ".join(f"WHEN {_quote(r.reason)} THEN {r.rests_on or 'NULL'}" for r in rules)
    allowed = ", ".join(_quote(r.reason) for r in rules if r.allowed) or "NULL"
    return f"""
WITH d AS (
  SELECT q.subject AS subject, s.*, coalesce(g.regime, 'opt-in') AS regime
  FROM q LEFT JOIN state s ON s.subject_id = q.subject
  LEFT JOIN regimes g ON g.code = s.jurisdiction),
r AS (
  SELECT *, CASE
    {reasons}
  END AS reason FROM d)
SELECT subject, reason IN ({allowed}) AS allowed, reason,
  CASE reason
    {seqs}
  END AS event_seq
FROM r ORDER BY subject"""


def evaluate_many(
    state: pa.Table,
    context: Context,
    subjects: Sequence[str] | None = None,
    rules: Sequence[Rule] = RULES,
) -> pa.Table:
    """:func:`evaluate` for every row of ``state`` (Arrow, ``ledger.state.arrow_schema``)
    at once, as one DuckDB query; or for the listed ``subjects`` (unknown ones are
    ``unknown-subject``). Returns :func:`decisions_schema`, sorted by subject."""
    import pyarrow as pa
    import pyarrow.compute as pc

    codes = [c for c in pc.unique(state.column("jurisdiction")).to_pylist() if c is not None]
    regimes = pa.table(
        {"code": codes, "regime": [str(context.policy.regime(c)) for c in codes]},
        schema=pa.schema([("code", pa.string()), ("regime", pa.string())]),
    )
    if subjects is None:
        q = pa.table({"subject": state.column("subject_id")})
    else:
        q = pa.table({"subject": pa.array(sorted(set(subjects)), pa.string())})
    sql = _evaluate_sql(rules)
    params = {k: v for k, v in context.sql_params().items() if f"${k}" in sql}
    with duckdb_tables(state=state, regimes=regimes, q=q) as con:
        result = con.sql(sql, params=params).to_arrow_table()
    return result.cast(decisions_schema())


# ---- the gate's rules for one record ------------------------------------------------------


@dataclass(frozen=True)
class RecordRule:
    """One step of the gate's order for a record: ``when`` holds, the record is left out
    for ``reason``. Conditions read the record's columns and its author's decision
    (``d.``), and name ``{never}``, ``{categories}``, ``{as_of}`` and ``{micros}``."""

    reason: str
    when: str


# A record is counted under the first that applies. A record whose author's decision is
# no is left out for the decision's reason (one of RULES' reasons).
RECORD_RULES: tuple[RecordRule, ...] = (
    RecordRule("malformed", "c.malformed"),
    RecordRule("category-never-used", "c.category IN ({never})"),
    RecordRule("category-not-allowed", "c.category NOT IN ({categories})"),
    RecordRule("created-after-as-of", "{micros}(c.created_at) > {as_of}"),
    RecordRule(str(Reason.UNKNOWN_SUBJECT), "d.subject IS NULL"),
)
MENTION_NOT_CONSENTED = "mention-not-consented"
# Every reason a record can be left out for, in the order they are checked.
EXCLUSION_REASONS: tuple[str, ...] = (
    *(r.reason for r in RECORD_RULES if r.reason != Reason.UNKNOWN_SUBJECT),
    *(str(r.reason) for r in RULES if not r.allowed),
    MENTION_NOT_CONSENTED,
)
# The functions whose names differ between the engines.
_DIALECTS = {"duckdb": {"micros": "epoch_us"}, "spark": {"micros": "unix_micros"}}


def record_reason_sql(
    dialect: str,
    purpose: Purpose,
    as_of: int,
    never_used: Sequence[str] = tuple(NEVER_USED),
    rules: Sequence[RecordRule] = RECORD_RULES,
) -> str:
    """An SQL ``CASE`` giving the reason a record ``c`` joined to its author's decision
    ``d`` is left out (NULL: it may be used), in DuckDB's or Spark's SQL."""

    def listed(values: Sequence[str]) -> str:
        return ", ".join(_quote(v) for v in sorted(values)) or "NULL"

    spell = {
        **_DIALECTS[dialect],
        "never": listed(never_used),
        "categories": listed(purpose.categories),
        "as_of": str(int(as_of)),
    }
    steps = "\n".join(f"  WHEN {r.when.format(**spell)} THEN {_quote(r.reason)}" for r in rules)
    return f"CASE\n{steps}\n  WHEN NOT d.allowed THEN d.reason\nEND"


# ---- reaching back --------------------------------------------------------------------------

_BOTH_YES = """
SELECT h.subject,
  coalesce(t.allowed, false) AND h.allowed AS allowed,
  CASE WHEN NOT coalesce(t.allowed, false) THEN coalesce(t.reason, 'unknown-subject')
       ELSE h.reason END AS reason,
  CASE WHEN NOT coalesce(t.allowed, false) THEN t.event_seq ELSE h.event_seq END AS event_seq
FROM h_ h LEFT JOIN t_ t ON t.subject = h.subject ORDER BY h.subject"""


def both_yes(at_as_of: pa.Table, at_head: pa.Table) -> pa.Table:
    """DESIGN.md's reaching back: yes only where yes at the as-of time and at the head;
    the reason is the first no (as-of time, then head). One row per subject at the head."""
    with duckdb_tables(t_=at_as_of, h_=at_head) as con:
        return con.sql(_BOTH_YES).to_arrow_table().cast(decisions_schema())


# ---- the DuckDB the vectorised evaluators run on ---------------------------------------------

_local = threading.local()


@contextmanager
def duckdb_tables(**tables: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
    """This thread's in-memory DuckDB connection (connecting costs more than a query),
    with Arrow ``tables`` registered by name for the length of the block."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "duckdb", None)
    if con is None:
        import duckdb

        con = _local.duckdb = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    try:
        yield con
    finally:
        for name in tables:
            con.unregister(name)


def release_duckdb() -> None:
    """Close this thread's DuckDB connection and the memory it caches (a new one is made
    on next use)."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "duckdb", None)
    if con is not None:
        _local.duckdb = None
        con.close()
