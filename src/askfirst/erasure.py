"""What erasing a subject deletes (DESIGN.md rule 12), inside an approved erasure's
transaction.

Everything personal askfirst keeps about the subject, in every table it owns: their
handle, names and e-mail (the names live on only as keyed hashes, so that others' mentions
of them are still redacted — ``askfirst.directory.forget``), their former names, their
sign-in accounts (their own and their representatives'), sessions, one-time links and API
tokens, the mail queued for them, the demo platform's content they wrote, and of every case
about them the requester's and representative's e-mail, the names, the link, the statement,
the reviewers' reasons and the evidence (whose files the caller deletes from the store once
the transaction is committed).

The ledger's events stay: nothing personal is in them (ids, purposes, times, hashes), so
``askfirst ledger verify`` still passes. The subject's id stays registered, ``erased``,
and is never used again; their handle is free for someone else.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, delete, select, update

from askfirst import directory, times
from askfirst.ledger.tables import (
    accounts,
    api_tokens,
    case_steps,
    cases,
    content,
    evidence,
    mail,
    sessions,
    signin_links,
    subjects,
)

_ERASED_DETAILS = json.dumps({"erased": True}, separators=(",", ":"))
# What is personal in a case's row: cleared by an erasure, and when a request expires.
CASE_PERSONAL = {"requester_email": None, "email": None, "names": "[]", "link": None,
                 "statement": None}  # fmt: skip


def erase(conn: Connection, subject: str, names_key: bytes) -> list[str]:
    """Delete what is personal about ``subject``; returns the evidence files' locations
    (for the caller to delete once committed)."""
    now = times.to_micros(times.now())
    if conn.dialect.name == "sqlite":
        # Deleted rows are overwritten with zeros, not left in free pages of the file.
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
    address = conn.execute(select(subjects.c.email).where(subjects.c.id == subject)).scalar()
    if address:  # cases about others that they reported, or were to be told of
        for column in (cases.c.requester_email, cases.c.email):
            conn.execute(update(cases).where(column == address).values({column.name: None}))
    directory.forget(conn, subject, names_key)
    account_ids = list(
        conn.execute(select(accounts.c.id).where(accounts.c.subject_id == subject)).scalars()
    )
    if account_ids:
        conn.execute(delete(sessions).where(sessions.c.account_id.in_(account_ids)))
        conn.execute(delete(signin_links).where(signin_links.c.account_id.in_(account_ids)))
        conn.execute(delete(api_tokens).where(api_tokens.c.account_id.in_(account_ids)))
        conn.execute(delete(accounts).where(accounts.c.id.in_(account_ids)))
    conn.execute(delete(api_tokens).where(api_tokens.c.subject_id == subject))
    conn.execute(delete(mail).where(mail.c.subject_id == subject))
    conn.execute(delete(content).where(content.c.author_id == subject))
    case_ids = list(conn.execute(select(cases.c.id).where(cases.c.subject_id == subject)).scalars())
    locations: list[str] = []
    if case_ids:
        locations = list(
            conn.execute(
                select(evidence.c.location).where(evidence.c.case_id.in_(case_ids))
            ).scalars()
        )
        conn.execute(delete(evidence).where(evidence.c.case_id.in_(case_ids)))
        conn.execute(
            update(cases).where(cases.c.id.in_(case_ids)).values(**CASE_PERSONAL, erased_at=now)
        )
        conn.execute(
            update(case_steps)
            .where(case_steps.c.case_id.in_(case_ids))
            .values(details=_ERASED_DETAILS)
        )
    # A file another case still holds (the store is keyed by content) stays.
    still = (
        set(
            conn.execute(
                select(evidence.c.location).where(evidence.c.location.in_(locations))
            ).scalars()
        )
        if locations
        else set()
    )
    return [loc for loc in dict.fromkeys(locations) if loc not in still]
