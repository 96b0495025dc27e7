"""Every row of the rule tables matters, in every evaluator generated from them.

For each decision rule there is a subject state for which it is the first rule that
applies: the Python evaluator and the vectorised (DuckDB) one both give its reason and
the event it rests on, and both give another answer once that row is taken out of the
table. The same for the gate's record rules, whose SQL both engines run (Spark's run is
in test_gate_spark.py).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from askfirst import parse_policy
from askfirst.ledger.state import State, arrow_schema
from askfirst.rules import (
    ALLOWED,
    EXCLUSION_REASONS,
    EXPLAIN,
    RECORD_RULES,
    RULES,
    Context,
    Reason,
    Rule,
    evaluate,
    evaluate_many,
    record_reason_sql,
)
from askfirst.times import DAY_US

POLICY = parse_policy(
    """
[purposes.on-after-notice]
title = "A purpose with a default after notice"
version = 2
categories = ["post"]
default = "on"
grace_days = 30
honours_gpc = true

[[purposes.on-after-notice.history]]
version = 1
categories = []

[purposes.off-by-default]
title = "A purpose off by default"
version = 1
categories = ["post"]
default = "off"

[jurisdictions]
opt_out = ["US"]
""",
    "test_rules policy",
)
AT = 1_800_000_000_000_000
ON = POLICY.purpose("on-after-notice")
OFF = POLICY.purpose("off-by-default")
MEMBER = State(registered_seq=1, jurisdiction="US", jurisdiction_seq=2)

# For each reason: a state (and purpose) for which its rule is the first that applies.
WITNESSES: dict[Reason, tuple[State, Any]] = {
    Reason.UNKNOWN_SUBJECT: (State(), ON),
    Reason.ERASED: (
        replace(
            MEMBER,
            status="erased",
            status_seq=3,
            choice_action="grant",
            choice_version=2,
            choice_seq=2,
        ),
        ON,
    ),
    Reason.ACCOUNT_CLOSED: (replace(MEMBER, status="closed", status_seq=3), ON),
    Reason.DECEASED: (replace(MEMBER, status="deceased", status_seq=3), ON),
    Reason.MINOR: (replace(MEMBER, minor="true", minor_seq=3), ON),
    Reason.GPC: (
        replace(MEMBER, gpc_seq=5, choice_action="grant", choice_version=2, choice_seq=4),
        ON,
    ),
    Reason.WITHDRAWN: (replace(MEMBER, choice_action="withdraw", choice_seq=4), ON),
    Reason.RECONSENT_NEEDED: (
        replace(MEMBER, choice_action="grant", choice_version=1, choice_seq=4),
        ON,
    ),
    Reason.GRANTED: (replace(MEMBER, choice_action="grant", choice_version=2, choice_seq=4), ON),
    Reason.NO_CONSENT: (replace(MEMBER, jurisdiction="DE"), ON),
    Reason.DEFAULT_OFF: (MEMBER, OFF),
    Reason.NOTICE_PENDING: (replace(MEMBER, notice_seq=6, notice_at=AT - 29 * DAY_US), ON),
    Reason.DEFAULT_AFTER_NOTICE: (
        replace(MEMBER, notice_seq=6, notice_at=AT - 31 * DAY_US),
        ON,
    ),
}


def vectorised(state: State, context: Context, rules: tuple[Rule, ...]) -> tuple[Any, Any]:
    row = {"subject_id": "s1", **asdict(state)}
    table = pa.Table.from_pylist([row], schema=arrow_schema())
    out = evaluate_many(table, context, ["s1"], rules).to_pylist()[0]
    return out["reason"], out["event_seq"]


def python(state: State, context: Context, rules: tuple[Rule, ...]) -> tuple[Any, Any]:
    try:
        reason, seq = evaluate(state, context, rules)
    except AssertionError:  # no rule applied
        return None, None
    return str(reason), seq


def test_every_reason_has_a_witness_and_words() -> None:
    assert set(WITNESSES) == {r.reason for r in RULES} == set(Reason)
    assert set(EXPLAIN) == set(Reason)
    assert {r.reason for r in RULES if r.allowed} == ALLOWED


@pytest.mark.parametrize("evaluator", [python, vectorised])
@pytest.mark.parametrize("rule", RULES, ids=lambda r: str(r.reason))
def test_every_rule_decides_its_witness_and_matters(evaluator: Any, rule: Rule) -> None:
    state, purpose = WITNESSES[rule.reason]
    context = Context(POLICY, purpose, AT)
    rests_on = getattr(state, rule.rests_on) if rule.rests_on else None
    assert evaluator(state, context, RULES) == (str(rule.reason), rests_on)
    without = tuple(r for r in RULES if r is not rule)
    assert evaluator(state, context, without)[0] != str(rule.reason)


def test_the_evaluators_agree_on_every_witness_at_several_times() -> None:
    for state, purpose in WITNESSES.values():
        for at in (AT - 365 * DAY_US, AT, AT + 365 * DAY_US):
            context = Context(POLICY, purpose, at)
            assert python(state, context, RULES) == vectorised(state, context, RULES)


# ---- the gate's record rules ---------------------------------------------------------------

RECORD = {
    "malformed": False,
    "category": "post",
    "created_at": AT - DAY_US,
    "subject": "m1",
    "allowed": True,
    "reason": "granted",
}
RECORD_WITNESSES: dict[str, dict[str, Any]] = {
    "malformed": {"malformed": True, "category": "message"},
    "category-never-used": {"category": "message", "created_at": AT + DAY_US},
    "category-not-allowed": {"category": "video", "created_at": AT + DAY_US},
    "created-after-as-of": {"created_at": AT + DAY_US, "subject": None},
    "unknown-subject": {"subject": None, "allowed": None, "reason": None},
}


def record_reasons(rows: list[dict[str, Any]], sql: str) -> list[Any]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        table = pa.Table.from_pylist(rows)
        con.register("rows_", table)
        return [
            r[0]
            for r in con.sql(
                f"SELECT {sql} FROM (SELECT malformed, category, "
                "make_timestamp(created_at)::TIMESTAMPTZ AS created_at FROM rows_) c "
                "POSITIONAL JOIN (SELECT subject, allowed, reason FROM rows_) d"
            ).fetchall()
        ]
    finally:
        con.close()


def test_every_record_rule_decides_its_witness_and_matters() -> None:
    assert set(RECORD_WITNESSES) == {r.reason for r in RECORD_RULES}
    assert set(RECORD_WITNESSES) <= {*EXCLUSION_REASONS, "unknown-subject"}
    rows = [{**RECORD, **w} for w in RECORD_WITNESSES.values()]
    rows.append({**RECORD, "allowed": False, "reason": "withdrawn"})
    rows.append(dict(RECORD))
    sql = record_reason_sql("duckdb", ON, AT)
    assert record_reasons(rows, sql) == [*RECORD_WITNESSES, "withdrawn", None]
    for k, rule in enumerate(RECORD_RULES):
        without = tuple(r for r in RECORD_RULES if r is not rule)
        sql = record_reason_sql("duckdb", ON, AT, rules=without)
        assert record_reasons(rows, sql)[k] != rule.reason


def test_the_shard_key_reads_alike_in_python_and_duckdb() -> None:
    from askfirst.lineage import SHARD_KEYS, shard_key, shard_key_sql

    ids = ["m1", "m001", "ünïcode", "", "x" * 300]
    con = duckdb.connect()
    try:
        con.register("ids_", pa.table({"subject": ids}))
        got = [r[0] for r in con.sql(f"SELECT {shard_key_sql('duckdb', 'subject')} FROM ids_")
               .fetchall()]  # fmt: skip
    finally:
        con.close()
    assert got == [shard_key(i) for i in ids]
    assert all(0 <= k < SHARD_KEYS for k in got)
