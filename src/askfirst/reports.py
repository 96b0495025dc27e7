"""Reports: the public summary of a model's training content, and a subject's access report.

``training_content`` follows the structure of the European Commission's template for the
public summary of training content (EU AI Act Art. 53(1)(d)): 1. general information,
2. list of data sources, 3. data processing aspects. askfirst fills in what its registry
knows — the snapshots a model version was trained on, their categories and counts, how
members' choices and opt-outs were honoured, what was left out and why, and where the
people whose data was used live — and says plainly which sections the provider must
complete from elsewhere.

``subject_report`` is everything askfirst holds about one subject (GDPR Art. 15).
``choice_counts`` and ``decision_counts`` are the staff console's figures.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, select

from askfirst import directory, lineage, notices, privacy, times
from askfirst.data_in_ai import data_in_ai
from askfirst.decisions import decide_many
from askfirst.errors import InputError
from askfirst.ledger.events import SERVICE, EventType
from askfirst.ledger.ledger import Ledger
from askfirst.ledger.tables import (
    accounts,
    api_tokens,
    choice_state,
    content,
    events,
    model_snapshots,
    models,
    notice_state,
    snapshots,
    subject_state,
)
from askfirst.ledger.tables import lineage as lineage_t
from askfirst.models import list_tasks
from askfirst.policy import NEVER_USED

TEMPLATE = "EU AI Act Art. 53(1)(d): template for the public summary of training content"
NOT_HELD = "Not recorded in askfirst: the provider completes this section."


def _model_row(conn: Any, name: str, version: str) -> Any:
    row = conn.execute(
        select(models).where(models.c.name == name, models.c.version == version)
    ).first()
    if row is None:
        raise InputError(f"no model {name} version {version}; 'askfirst model list' shows them")
    return row


def training_content(ledger: Ledger, name: str, version: str) -> dict[str, Any]:
    """The public summary of what model ``name`` ``version`` was trained on, as data."""
    with ledger.engine.connect() as conn:
        model = _model_row(conn, name, version)
        snaps = conn.execute(
            select(snapshots)
            .join(model_snapshots, model_snapshots.c.snapshot == snapshots.c.id)
            .where(model_snapshots.c.model == model.id)
            .order_by(snapshots.c.id)
        ).all()
        numbers = [s.id for s in snaps]
        places = conn.execute(
            select(subject_state.c.jurisdiction, func.count(func.distinct(lineage_t.c.subject_id)))
            .join(subject_state, subject_state.c.subject_id == lineage_t.c.subject_id)
            .where(lineage_t.c.snapshot.in_(numbers), lineage_t.c.author_records > 0)
            .group_by(subject_state.c.jurisdiction)
        ).all()
    manifests = [json.loads(s.manifest) for s in snaps]
    by_category: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    for m in manifests:
        by_category.update(m.get("output_by_category", {}))
        excluded.update({k: v for k, v in m["excluded"].items() if v})
    purposes = sorted({s.purpose for s in snaps})
    jurisdictions = sorted(
        (
            {
                "jurisdiction": j or "unknown",
                "regime": str(ledger.policy.regime(j)),
                "authors": n,
            }
            for j, n in places
        ),
        key=lambda r: (-int(r["authors"]), str(r["jurisdiction"])),
    )
    tasks = list_tasks(ledger, status=None, model=name)
    mine = [t for t in tasks if t["model"]["version"] == version]
    return {
        "template": TEMPLATE,
        "generated_at": times.iso(times.now()),
        "general_information": {
            "provider": model.owner,
            "model": {"name": model.name, "version": model.version},
            "registered_at": times.iso(model.created_at),
            "modalities": ["text"],
            "training_data_size": {
                "records": sum(m["output_records"] for m in manifests),
                "snapshots": len(manifests),
            },
            "latest_data_as_of": max((m["as_of"] for m in manifests), default=None),
        },
        "data_sources": {
            "publicly_available_datasets": NOT_HELD,
            "private_datasets_from_third_parties": NOT_HELD,
            "crawled_and_scraped_data": NOT_HELD,
            "user_data": [
                {
                    "snapshot_id": m["snapshot_id"],
                    "purpose": m["purpose"],
                    "purpose_title": _title(ledger, m["purpose"]),
                    "as_of": m["as_of"],
                    "records": m["output_records"],
                    "records_by_category": m.get("output_by_category", {}),
                    "authors": m["subjects_as_author"],
                    "people_mentioned_and_kept": m["subjects_as_mention"],
                    "status": s.status,
                }
                for s, m in zip(snaps, manifests, strict=True)
            ],
            "records_by_category": dict(sorted(by_category.items())),
            "synthetic_data": NOT_HELD,
            "other_sources": NOT_HELD,
        },
        "data_processing": {
            "choices_and_opt_outs": [_honoured(ledger, p) for p in purposes],
            "excluded_records_by_reason": dict(sorted(excluded.items())),
            "mentions_redacted": sum(m["redacted_mentions"] for m in manifests),
            "on_mention": sorted({m["on_mention"] for m in manifests}),
            "never_used_categories": sorted(NEVER_USED),
            "jurisdictions": jurisdictions,
            "withdrawals_after_training": {
                "tasks_open": sum(1 for t in mine if t["status"] == "open"),
                "tasks_closed": sum(1 for t in mine if t["status"] == "closed"),
            },
            "removal_of_illegal_content": NOT_HELD,
        },
    }


def _title(ledger: Ledger, purpose: str) -> str:
    p = ledger.policy.purposes.get(purpose)
    return p.title if p else purpose


def _honoured(ledger: Ledger, purpose: str) -> dict[str, Any]:
    p = ledger.policy.purposes.get(purpose)
    if p is None:
        return {"purpose": purpose, "note": "no longer in the policy"}
    return {
        "purpose": p.name,
        "title": p.title,
        "legal_basis": p.legal_basis,
        "default": p.default,
        "consent_needed_where": "opt-in jurisdictions (the EEA, the UK, Switzerland, and "
        "anywhere not known): only members who said yes",
        "notice_before_any_default_days": p.grace_days,
        "global_privacy_control_honoured": p.honours_gpc,
        "withdrawals_reach_back": p.reaches_back,
        "categories_used": list(p.categories),
        "never_used": "private messages, security and payment data, and anything by a minor",
        "other_peoples_data": "mentions of people who did not say yes are redacted "
        "(by mention id, @handle and known name)",
        "crawler_signals": "public pages of members who said no carry X-Robots-Tag: noai, "
        "tdm-reservation: 1 and Content-Usage: train-ai=n",
    }


def training_content_markdown(report: dict[str, Any]) -> str:
    """The same summary as a Markdown page."""
    g, d, p = report["general_information"], report["data_sources"], report["data_processing"]
    lines = [
        f"# Public summary of training content: {g['model']['name']} {g['model']['version']}",
        "",
        f"_{report['template']}. Generated by askfirst on {report['generated_at']}._",
        "",
        "## 1. General information",
        "",
        f"- Provider: {g['provider'] or 'not recorded'}",
        f"- Model: {g['model']['name']}, version {g['model']['version']} "
        f"(registered {g['registered_at']})",
        f"- Modalities: {', '.join(g['modalities'])}",
        f"- Training data: {g['training_data_size']['records']:,} records in "
        f"{g['training_data_size']['snapshots']} snapshot(s)",
        f"- Latest data as of: {g['latest_data_as_of'] or 'none'}",
        "",
        "## 2. List of data sources",
        "",
        f"### 2.1 Publicly available datasets\n\n{d['publicly_available_datasets']}",
        "",
        f"### 2.2 Private datasets from third parties\n\n"
        f"{d['private_datasets_from_third_parties']}",
        "",
        f"### 2.3 Data crawled and scraped from online sources\n\n{d['crawled_and_scraped_data']}",
        "",
        "### 2.4 User data: content of the platform's members, used with their say-so",
        "",
        "| snapshot | purpose | as of | records | authors | people mentioned | status |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for u in d["user_data"]:
        lines.append(
            f"| {u['snapshot_id'][:16]} | {u['purpose']} | {u['as_of']} | {u['records']:,} "
            f"| {u['authors']:,} | {u['people_mentioned_and_kept']:,} | {u['status']} |"
        )
    lines += ["", "Records by category:", ""]
    lines += [f"- {c}: {n:,}" for c, n in d["records_by_category"].items()] or ["- none"]
    lines += [
        "",
        f"### 2.5 Synthetic data\n\n{d['synthetic_data']}",
        "",
        f"### 2.6 Other sources\n\n{d['other_sources']}",
        "",
        "## 3. Data processing aspects",
        "",
        "### 3.1 How members' choices and opt-outs were honoured",
        "",
    ]
    for h in p["choices_and_opt_outs"]:
        lines += [
            f"**{h.get('title', h['purpose'])}** (`{h['purpose']}`)",
            "",
            f"- Default: {h.get('default')}; consent needed in "
            f"{h.get('consent_needed_where', 'n/a')}",
            f"- Notice at least {h.get('notice_before_any_default_days')} days before any default",
            f"- Global Privacy Control honoured: {h.get('global_privacy_control_honoured')}; "
            f"withdrawals reach back to built snapshots and models: "
            f"{h.get('withdrawals_reach_back')}",
            f"- Never used: {h.get('never_used')}",
            f"- Other people's data: {h.get('other_peoples_data')}",
            f"- Crawler signals: {h.get('crawler_signals')}",
            "",
        ]
    lines += ["Records left out, by reason:", ""]
    lines += [f"- {r}: {n:,}" for r, n in p["excluded_records_by_reason"].items()] or ["- none"]
    lines += [
        "",
        f"Mentions redacted: {p['mentions_redacted']:,}.",
        "",
        "Jurisdictions of the authors whose content was used:",
        "",
    ]
    lines += [
        f"- {j['jurisdiction']} ({j['regime']}): {j['authors']:,}" for j in p["jurisdictions"]
    ] or ["- none"]
    w = p["withdrawals_after_training"]
    lines += [
        "",
        f"Withdrawals after training: {w['tasks_open']} retraining/unlearning task(s) open, "
        f"{w['tasks_closed']} closed.",
        "",
        f"### 3.2 Removal of illegal content\n\n{p['removal_of_illegal_content']}",
        "",
    ]
    return "\n".join(lines)


def subject_report(ledger: Ledger, subject: str) -> dict[str, Any]:
    """Everything askfirst holds about ``subject`` (a GDPR access request), JSON-ready."""
    who = privacy.profile(ledger, subject)
    entry = directory.entry(ledger, subject)
    events = ledger.subject_events(subject)
    with ledger.engine.connect() as conn:
        account_rows = conn.execute(
            select(accounts.c.username, accounts.c.kind, accounts.c.created_at).where(
                accounts.c.subject_id == subject
            )
        ).all()
        token_rows = conn.execute(
            select(
                api_tokens.c.name,
                api_tokens.c.scopes,
                api_tokens.c.created_at,
                api_tokens.c.revoked_at,
            ).where(api_tokens.c.subject_id == subject)
        ).all()
        records = conn.execute(
            select(content.c.record_id, content.c.category, content.c.created_at, content.c.public)
            .where(content.c.author_id == subject)
            .order_by(content.c.created_at)
        ).all()
    return {
        "format": "askfirst-subject-report/1",
        "generated_at": times.iso(times.now()),
        "subject": {
            "id": who.subject,
            "kind": who.kind,
            "handle": who.handle,
            "names": who.names,
            "jurisdiction": who.jurisdiction,
            "status": who.status,
            # the e-mail notices go to, and the handles and names they gave up lately
            # (still protected in others' content until the date given)
            "email": entry.email,
            "former": [f.to_json() for f in entry.former],
            # when their handle, names, e-mail and accounts were deleted (an erasure)
            "erased_at": next(
                (
                    times.iso(e.recorded_at)
                    for e in reversed(events)
                    if e.type == EventType.STATUS and e.value == "erased"
                ),
                None,
            ),
        },
        "settings": privacy.overview(ledger, subject),
        "ledger_events": [e.to_json() for e in events],
        "data_in_ai": data_in_ai(ledger, subject),
        "snapshots": lineage.snapshots_of(ledger, subject),
        "tasks": list_tasks(ledger, status=None, subject=subject),
        "accounts": [
            {"username": a.username, "kind": a.kind, "created_at": times.iso(a.created_at)}
            for a in account_rows
        ],
        "api_tokens": [
            {
                "name": t.name,
                "scopes": t.scopes,
                "created_at": times.iso(t.created_at),
                "revoked_at": times.iso(t.revoked_at) if t.revoked_at else None,
            }
            for t in token_rows
        ],
        "content_records": [
            {
                "record_id": r.record_id,
                "category": r.category,
                "created_at": times.iso(r.created_at),
                "public": bool(r.public),
            }
            for r in records
        ],
    }


# ---- the staff console's figures ------------------------------------------------------------


def choice_counts(ledger: Ledger) -> list[dict[str, Any]]:
    """Current choices by purpose, regime and action."""
    q = (
        select(
            choice_state.c.purpose,
            subject_state.c.jurisdiction,
            choice_state.c.action,
            func.count(),
        )
        .join(subject_state, subject_state.c.subject_id == choice_state.c.subject_id)
        .group_by(choice_state.c.purpose, subject_state.c.jurisdiction, choice_state.c.action)
    )
    counts: dict[tuple[str, str, str], int] = {}
    with ledger.engine.connect() as conn:
        for purpose, jurisdiction, action, n in conn.execute(q):
            key = (purpose, str(ledger.policy.regime(jurisdiction)), action)
            counts[key] = counts.get(key, 0) + n
    return [
        {"purpose": p, "regime": r, "action": a, "count": n}
        for (p, r, a), n in sorted(counts.items())
    ]


def decision_counts(ledger: Ledger) -> list[dict[str, Any]]:
    """For each purpose: how many subjects there are, and how many may be used now."""
    import pyarrow.compute as pc

    out = []
    for name in ledger.policy.purposes:
        allowed = decide_many(ledger, name).column("allowed")
        out.append(
            {
                "purpose": name,
                "subjects": len(allowed),
                "allowed": int(pc.sum(allowed).as_py() or 0),
            }
        )
    return out


# ---- notices: who was told, and what they chose ---------------------------------------------

STATUS_COUNTS = (
    "subjects",  # registered subjects who live there
    "could_default",  # ... whom a default of the current version could reach
    "told_email",  # ... told the current version by e-mail
    "told_in_app",  # ... on the site
    "told_other",  # ... by another channel the platform recorded
    "in_grace",  # told, and the default has not started for them yet
    "have_default",  # in by default: told, had time to say no, and did not
    "said_yes",
    "said_no",  # said no, objected, or their browser's GPC signal counts as no
)
_STATUS_SQL = """
SELECT coalesce(s.jurisdiction, '') AS jurisdiction, s.regime,
  count(*) AS subjects,
  count(*) FILTER (WHERE s.regime = 'opt-out' AND $default_on AND s.status = 'active'
                   AND s.kind <> 'person') AS could_default,
  count(*) FILTER (WHERE s.channel = 'email') AS told_email,
  count(*) FILTER (WHERE s.channel = 'in-app') AS told_in_app,
  count(*) FILTER (WHERE s.told AND coalesce(s.channel, '') NOT IN ('email', 'in-app'))
    AS told_other,
  count(*) FILTER (WHERE s.told AND d.reason = 'notice-pending') AS in_grace,
  count(*) FILTER (WHERE d.reason = 'default-after-notice') AS have_default,
  count(*) FILTER (WHERE d.reason = 'granted') AS said_yes,
  count(*) FILTER (WHERE d.reason IN ('withdrawn', 'gpc')) AS said_no
FROM s JOIN d ON d.subject = s.subject_id
GROUP BY ALL ORDER BY 1"""


def notice_status(ledger: Ledger, purpose: str) -> dict[str, Any]:
    """For a purpose's current version, per jurisdiction: how many subjects a default
    could reach, how many were told (by channel), are inside the grace period, are in
    by default, said yes, said no."""
    import pyarrow as pa

    from askfirst.rules import duckdb_tables

    p = ledger.policy.purpose(purpose)
    current = notices.current(ledger, purpose)
    decided = decide_many(ledger, purpose)
    q = (
        select(
            subject_state.c.subject_id,
            subject_state.c.jurisdiction,
            subject_state.c.status,
            subject_state.c.kind,
            events.c.value.label("channel"),
            (notice_state.c.seq.is_not(None)).label("told"),
        )
        .select_from(
            subject_state.outerjoin(
                notice_state,
                and_(
                    notice_state.c.subject_id == subject_state.c.subject_id,
                    notice_state.c.purpose == purpose,
                    notice_state.c.version == p.version,
                ),
            ).outerjoin(events, events.c.seq == notice_state.c.seq)
        )
        .where(subject_state.c.subject_id != SERVICE)
    )
    with ledger.engine.connect() as conn:
        rows = conn.execute(q).all()
    places = sorted({r.jurisdiction or "" for r in rows})
    regimes = {j: str(ledger.policy.regime(j or None)) for j in places}
    table = pa.table(
        {
            "subject_id": [r.subject_id for r in rows],
            "jurisdiction": [r.jurisdiction for r in rows],
            "regime": [regimes[r.jurisdiction or ""] for r in rows],
            "status": [r.status for r in rows],
            "kind": [r.kind for r in rows],
            "channel": [r.channel for r in rows],
            "told": [bool(r.told) for r in rows],
        }
    )
    default_on = "true" if current is not None and current.terms.default == "on" else "false"
    with duckdb_tables(s=table, d=decided) as con:
        found = con.sql(_STATUS_SQL.replace("$default_on", default_on)).fetchall()
    places_out = [
        {
            "jurisdiction": row[0] or None,
            "regime": row[1],
            **dict(zip(STATUS_COUNTS, row[2:], strict=True)),
        }
        for row in found
    ]
    totals = {k: sum(int(r[k]) for r in places_out) for k in STATUS_COUNTS}
    return {
        "purpose": purpose,
        "title": p.title,
        "version": p.version,
        "published": current.to_json() if current is not None else None,
        "default": current.terms.default if current is not None else p.default,
        "jurisdictions": places_out,
        "totals": totals,
        "choices_over_time": choices_over_time(ledger, purpose),
    }


def choices_over_time(ledger: Ledger, purpose: str) -> list[dict[str, Any]]:
    """Yes and no said for a purpose, per week (Monday, UTC) and regime (where the
    subject lives now), oldest first: the chart on the staff's notices page."""
    q = (
        select(events.c.recorded_at, events.c.value, subject_state.c.jurisdiction)
        .join(subject_state, subject_state.c.subject_id == events.c.subject_id)
        .where(events.c.type == "choice", events.c.purpose == purpose)
    )
    counts: Counter[tuple[str, str, str]] = Counter()
    regimes: dict[str | None, str] = {}
    with ledger.engine.connect() as conn:
        for at, action, where in conn.execute(q):
            when = times.from_micros(at).date()
            week = (when - timedelta(days=when.weekday())).isoformat()
            if where not in regimes:
                regimes[where] = str(ledger.policy.regime(where))
            counts[(week, regimes[where], "yes" if action == "grant" else "no")] += 1
    weeks = sorted({k[0] for k in counts})
    return [
        {
            "week": w,
            "regime": r,
            "yes": counts[(w, r, "yes")],
            "no": counts[(w, r, "no")],
        }
        for w in weeks
        for r in ("opt-in", "opt-out")
    ]
