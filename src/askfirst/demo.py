"""The demo platform: a small professional network on embedded SQLite.

``askfirst demo`` builds it once in a folder (and reuses it after): the shipped policy;
about 200 members across the EEA, the UK, Switzerland, three US states, Canada, India
and Brazil, a few of them minors; a company page with two admins; choices, GPC signals
and notices as a real platform would have them; and a content corpus of profiles,
posts, comments, articles and video transcripts that @mention and name each other, with
private messages and 2FA phone numbers that no purpose may ever use. Then it serves the
web app. Everything is generated from a fixed seed, so two demos look the same.
"""

from __future__ import annotations

import json
import random
import unicodedata
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

from askfirst import accounts, notices, privacy, times
from askfirst.decisions import ALLOWED, EXPLAIN, Reason, decide_many
from askfirst.ledger import Ledger, NewEvent, SubjectIn
from askfirst.ledger.events import authority_value
from askfirst.ledger.tables import content
from askfirst.models import list_tasks
from askfirst.policy import load_policy
from askfirst.propagation import open_ledger

SEED = 20261129
MEMBER_PASSWORD = "askfirst-demo"
STAFF_USER = "staff"
EDITOR_USER = "editor"
REVIEWERS = ("ana", "ben")  # two reviewers: a death, a representative, an erasure need both
AUDITOR_USER = "audit"
STAFF = (
    (STAFF_USER, "admin"),
    (EDITOR_USER, "policy-editor"),
    (REVIEWERS[0], "reviewer"),
    (REVIEWERS[1], "reviewer"),
    (AUDITOR_USER, "auditor"),
)
PURPOSES = ("genai-training", "third-party-research")

# place -> (share of members, first names, last names)
PLACES: dict[str, tuple[int, list[str], list[str]]] = {
    "DE": (22, ["Anna", "Lukas", "Mia", "Jonas", "Lea"], ["Keller", "Braun", "Wolf", "Becker"]),
    "FR": (18, ["Luc", "Camille", "Chloé", "Hugo"], ["Martin", "Bernard", "Petit", "Moreau"]),
    "NL": (8, ["Daan", "Sanne", "Noor"], ["de Vries", "Jansen", "Visser"]),
    "IE": (6, ["Aoife", "Cian", "Niamh"], ["Murphy", "Kelly", "Byrne"]),
    "PL": (8, ["Zofia", "Jakub", "Kasia"], ["Nowak", "Kowalski", "Wiśniewska"]),
    "ES": (8, ["Lucía", "Mateo", "Sofía"], ["García", "López", "Ruiz"]),
    "GB": (16, ["Olu", "Amelia", "Harry", "Priti"], ["Adeyemi", "Smith", "Jones", "Shah"]),
    "CH": (8, ["Hans", "Lena", "Nico"], ["Weber", "Meier", "Frei"]),
    "US-CA": (20, ["Jo", "Maya", "Diego", "Kai"], ["Rivera", "Chen", "Nguyen", "Park"]),
    "US-TX": (16, ["Sam", "Ava", "Cole"], ["Walker", "Hernandez", "Brooks"]),
    "US-NY": (16, ["Mia", "Eli", "Zoe"], ["Goldberg", "Russo", "Kim"]),
    "CA": (14, ["Liam", "Chloe", "Noah"], ["Tremblay", "Roy", "Singh"]),
    "IN": (22, ["Priya", "Arjun", "Ananya", "Rohan"], ["Raman", "Iyer", "Gupta", "Das"]),
    "BR": (18, ["Inês", "Lucas", "Beatriz"], ["Costa", "Silva", "Souza"]),
}

POSTS = [
    "Excited to share that our team shipped the new onboarding flow this week. Thanks {m}!",
    "Three things I learned from mentoring this year: listen first, ask why, write it down.",
    "Great panel on remote work today with {m} and {n}. Slides are in the comments.",
    "We're hiring data engineers in {place}. Ping me or {m} if you're curious.",
    "Reflections after ten years in logistics: the boring parts are where the value is.",
    "Proud of {m} for finishing the marathon for charity!",
]
COMMENTS = [
    "Congratulations! Well deserved.",
    "Agree with {m} here; the second point is underrated.",
    "Thanks for sharing, {n}. Saving this for later.",
    "Would love to hear more about how you measured this.",
]
ARTICLES = [
    "How we cut our cloud bill by 40% without slowing down. A write-up with {m}, who led "
    "the storage work, and lessons for teams of any size.",
    "Why apprenticeships matter: notes from a year of hiring without degree requirements.",
]
VIDEOS = [
    "[transcript] Hi everyone, today I'm talking with {n} about negotiating your first "
    "salary. {m}, you had a great story about this...",
    "[transcript] Quick tour of our new lab. Shout-out to {m} for the design.",
]


@dataclass(frozen=True)
class Demo:
    folder: Path
    url: str
    key_dir: Path
    staff_password: str
    sample_members: list[str]


MODEL = ("demo-writer", "2026.1")
SAMPLES = {
    0: ("anna.keller", "Anna Keller"),
    100: ("jo.rivera", "Jo Rivera"),
    170: ("priya.raman", "Priya Raman"),
}


def _members(rng: random.Random) -> list[SubjectIn]:
    out: list[SubjectIn] = []
    handles: set[str] = {handle for handle, _ in SAMPLES.values()}
    today = date.today()
    for place, (count, firsts, lasts) in PLACES.items():
        for i in range(count):
            first, last = rng.choice(firsts), rng.choice(lasts)
            # Handles are ASCII, as on most platforms: "Chloé" -> "chloe".
            folded = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore")
            base = folded.decode().lower().replace(" ", "")
            handle = base
            while handle in handles:
                handle = f"{base}{rng.randint(2, 99)}"
            handles.add(handle)
            minor = i == count - 1 and place in ("US-NY", "DE", "IN", "BR")  # a few teens
            born = today.replace(
                year=today.year - (rng.randint(14, 17) if minor else rng.randint(19, 70))
            )
            born -= timedelta(days=rng.randint(1, 300))
            if len(out) in SAMPLES:
                handle, name = SAMPLES[len(out)]
                first, last = name.split()
                minor, born = False, date(1990, 4, 1)
            out.append(
                SubjectIn(
                    id=f"m{len(out) + 1:03d}",
                    jurisdiction=place,
                    handle=handle,
                    names=[f"{first} {last}"],
                    birth_date=born,
                )
            )
    return out


def _text(
    rng: random.Random, templates: list[str], people: list[SubjectIn], place: str
) -> tuple[str, list[str]]:
    m, n = rng.sample(people, 2)
    text = rng.choice(templates).format(
        m=f"@{m.handle}", n=m.names[0] if rng.random() < 0.5 else n.names[0], place=place
    )
    mentions = [m.id] if f"@{m.handle}" in text else []
    return text, mentions


def _corpus(rng: random.Random, members: list[SubjectIn], start: int) -> list[dict[str, Any]]:
    """Profiles, posts, comments, articles, video transcripts; plus messages and 2FA numbers."""
    day = 86_400 * times.MICROS
    rows: list[dict[str, Any]] = []

    def add(author: SubjectIn, category: str, text: str, mentions: list[str]) -> None:
        rows.append(
            {
                "record_id": f"r{len(rows) + 1:05d}",
                "author_id": author.id,
                "category": category,
                "created_at": start + rng.randint(1, 360) * day,
                "text": text,
                "mentions": mentions,
            }
        )

    for who in members:
        place = who.jurisdiction or "somewhere"
        add(who, "profile", f"{who.names[0]} · works in {place} · open to new ideas.", [])
        for category, templates, count in (
            ("post", POSTS, rng.randint(1, 3)),
            ("comment", COMMENTS, rng.randint(1, 3)),
            ("article", ARTICLES, int(rng.random() < 0.2)),
            ("video", VIDEOS, int(rng.random() < 0.15)),
        ):
            for _ in range(count):
                add(who, category, *_text(rng, templates, members, place))
        other = rng.choice(members)
        add(who, "message", f"Hey {other.names[0]}, are we still on for Thursday?", [other.id])
        add(who, "security", f"2FA phone +{rng.randint(10**10, 10**11 - 1)}", [])
    return rows


def _history(rng: random.Random, members: list[SubjectIn], t0: int) -> list[NewEvent]:
    """Notices, choices, GPC signals and status changes, in time order."""
    day = 86_400 * times.MICROS
    evs: list[tuple[int, NewEvent]] = []
    for m in members:
        evs.append(
            (
                t0 + day,
                NewEvent(
                    type="notice-delivered",
                    subject=m.id,
                    actor="system:demo",
                    source="demo",
                    purpose=PURPOSES[0],
                    value="email",
                ),
            )
        )
        r = rng.random()
        for purpose, p_yes in ((PURPOSES[0], 0.35), (PURPOSES[1], 0.25)):
            if rng.random() < p_yes:
                t = t0 + rng.randint(2, 200) * day
                evs.append(
                    (
                        t,
                        NewEvent(
                            type="choice",
                            subject=m.id,
                            actor=m.id,
                            source="demo",
                            purpose=purpose,
                            value="grant",
                        ),
                    )
                )
                if rng.random() < 0.2:  # changed their mind later
                    evs.append(
                        (
                            t + rng.randint(5, 100) * day,
                            NewEvent(
                                type="choice",
                                subject=m.id,
                                actor=m.id,
                                source="demo",
                                purpose=purpose,
                                value="withdraw",
                            ),
                        )
                    )
        if r < 0.06 and m.handle not in {h for h, _ in SAMPLES.values()}:
            evs.append(
                (
                    t0 + rng.randint(100, 300) * day,
                    NewEvent(type="gpc", subject=m.id, actor=m.id, source="demo", value="1"),
                )
            )
    # The platform's own records from before askfirst (a memorial request it handled, an
    # account closed): a death recorded today goes through a case reviewed by two staff.
    for i, status in ((7, "deceased"), (31, "closed")):
        evs.append(
            (
                t0 + 320 * day,
                NewEvent(
                    type="status",
                    subject=members[i].id,
                    actor="system:memorials" if status == "deceased" else "staff:demo",
                    source="demo",
                    value=status,
                ),
            )
        )
    evs.sort(key=lambda pair: pair[0])
    return [replace(ev, recorded_at=t) for t, ev in evs]


def build(folder: Path) -> Demo:
    """Create the demo platform in ``folder``, or reuse the one already there."""
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'askfirst.db'}"
    key_dir = folder / "keys"
    staff_file = key_dir / "staff-password.txt"
    with open_ledger(url, load_policy(), create=True) as ledger:
        if ledger.head().seq == 0:
            _populate(ledger, folder, staff_file)
    samples = [handle for handle, _ in SAMPLES.values()]
    return Demo(folder, url, key_dir, staff_file.read_text().strip(), samples)


def _populate(ledger: Ledger, folder: Path, staff_file: Path) -> None:
    rng = random.Random(SEED)
    members = _members(rng)
    org = SubjectIn(
        id="org-acme",
        kind="organization",
        jurisdiction="US",
        handle="acme",
        names=["Acme Robotics"],
    )
    start = times.now() - timedelta(days=400)
    t0 = times.to_micros(start)
    # Both purposes' terms were published before anyone was told of them.
    for purpose in PURPOSES:
        notices.publish(
            ledger,
            ledger.policy,
            purpose,
            changes="First published: what it uses, who gets it, and that it is off "
            "until you say yes.",
            actor="staff:demo",
            source="demo",
            at=t0 - 86_400 * times.MICROS,
        )
    ledger.register([*members, org], actor="system:demo", source="demo", since=start)
    admins = [members[0].id, members[100].id]
    history = [
        NewEvent(
            type="authority",
            subject=org.id,
            actor="staff:demo",
            source="demo",
            value=authority_value("grant", "page-admin", a),
            recorded_at=t0 + 1,
        )
        for a in admins
    ] + _history(rng, members, t0)
    ledger.append_many(history)

    corpus = _corpus(rng, members, t0)
    (folder / "corpus").mkdir(exist_ok=True)
    with (folder / "corpus" / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for row in corpus:
            fh.write(json.dumps({**row, "created_at": times.iso(row["created_at"])}) + "\n")
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(content),
            [
                {
                    **row,
                    "mentions": json.dumps(row["mentions"]),
                    "public": row["category"] not in ("message", "security", "payment"),
                }
                for row in corpus
            ],
        )

    hashed = accounts.hash_password(MEMBER_PASSWORD)
    for m in members:
        assert m.handle is not None
        accounts.create_account(
            ledger, m.handle, MEMBER_PASSWORD, kind="member", subject=m.id, password_hash=hashed
        )
    staff_password = f"staff-{rng.getrandbits(64):016x}"
    staff_hash = accounts.hash_password(staff_password)
    for username, role in STAFF:
        accounts.create_account(
            ledger, username, staff_password, kind="staff", role=role, password_hash=staff_hash
        )
    staff_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staff_file.write_text(staff_password + "\n")
    staff_file.chmod(0o600)
    _train(ledger, folder, members)


def _train(ledger: Ledger, folder: Path, members: list[SubjectIn]) -> None:
    """A snapshot for genai-training, a model trained on it, and then one member in it
    who says no: the snapshot goes stale and the model gets a retraining task."""
    from askfirst.gate import build_snapshot
    from askfirst.lineage import snapshots_of
    from askfirst.models import register_model

    (folder / "snapshots").mkdir(exist_ok=True)
    manifest = build_snapshot(
        ledger, PURPOSES[0], folder / "corpus", folder / "snapshots" / "genai-training-1"
    )
    register_model(
        ledger,
        MODEL[0],
        MODEL[1],
        [manifest.snapshot_id],
        owner="ml-team@example.com",
        shards=8,
        actor="staff:demo",
    )
    samples = {members[i].id for i in SAMPLES}
    for m in members:
        held = snapshots_of(ledger, m.id)
        if m.id not in samples and held and held[0]["author_records"]:
            ledger.append(
                NewEvent(
                    type="choice",
                    subject=m.id,
                    actor=m.id,
                    source="demo",
                    purpose=PURPOSES[0],
                    value="withdraw",
                )
            )
            return


def summary(demo: Demo, out: Console, base_url: str) -> None:
    """What the demo holds, who may be used for what and why, and how to sign in."""
    with open_ledger(demo.url, load_policy()) as ledger:
        table = Table(title="genai-training today, by reason", title_justify="left")
        for col in ("reason", "subjects", "used?", "meaning"):
            table.add_column(col)
        decisions = decide_many(ledger, PURPOSES[0]).to_pylist()
        counts: dict[str, int] = {}
        for d in decisions:
            counts[d["reason"]] = counts.get(d["reason"], 0) + 1
        for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            allowed = Reason(reason) in ALLOWED
            table.add_row(reason, str(n), "yes" if allowed else "no", EXPLAIN[Reason(reason)])
        head = ledger.head()
        open_tasks = list_tasks(ledger, status="open")
        withdrew = privacy.profile(ledger, open_tasks[0]["subject"]).handle if open_tasks else None
    out.print(
        f"[bold]askfirst demo[/] in {demo.folder} — {len(decisions)} subjects, ledger "
        f"head {head.seq} {head.hash[:16]}…"
    )
    out.print(table)
    out.print(
        f"\nOpen {base_url}/signin and sign in as a member: "
        f"[bold]{demo.sample_members[0]}[/] (Germany), "
        f"[bold]{demo.sample_members[1]}[/] (California), "
        f"[bold]{demo.sample_members[2]}[/] (India) — password [bold]{MEMBER_PASSWORD}[/] "
        f"(every member's handle works). anna.keller and jo.rivera also manage the Acme "
        f"Robotics page.\n"
        f"Staff console: sign in as [bold]{STAFF_USER}[/] (admin), [bold]{EDITOR_USER}[/] "
        f"(policy editor), [bold]{REVIEWERS[0]}[/] or [bold]{REVIEWERS[1]}[/] (reviewers) or "
        f"[bold]{AUDITOR_USER}[/] (auditor), each with password [bold]{demo.staff_password}[/] "
        f"(kept in {demo.key_dir / 'staff-password.txt'}).\n"
        + (
            f"Model {MODEL[0]} {MODEL[1]} was trained on a snapshot of the corpus; then "
            f"[bold]{withdrew}[/] said no, so the snapshot is stale and the model has a "
            "retraining task: see Settings → Your data in AI as them, and Admin → tasks.\n"
            if withdrew
            else ""
        )
        + f"The corpus for the gate is in {demo.folder / 'corpus'}; the API schema at "
        f"{base_url}/openapi.json. Press Ctrl+C to stop."
    )
