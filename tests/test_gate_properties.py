"""The gate (build_snapshot) held to DESIGN.md for random ledgers and corpora.

Hypothesis writes a ledger -- a handful of members, organizations and people without
accounts, with handles and names; grants (some under a notice version since widened),
withdrawals, objections, GPC signals, notices, closures, deaths, minors and moves, some of
them recorded after the as-of time -- and a corpus of JSONL and Parquet files (one file or a
folder) whose records are by those subjects and by strangers, in every category, created
before and after the as-of time, with @handles and names in their texts and mentions lists,
and some of them malformed. It then builds snapshots of it.

What each snapshot must hold is worked out here without the gate: a subject's decision comes
from decide() at the as-of time and at the ledger head, the reason a record is left out from
DESIGN.md's order, and mentions from scanning each text in plain Python. The properties:

1. no record whose author's decision is no, at the as-of time or at the head, is kept;
2. no kept text holds the @handle of anyone whose decision is no, nor -- if their names are
   protected, or the record mentions them by id or @handle -- any of their names;
3. every input record is kept or counted under exactly one reason, the first that applies;
4. a rebuild gives the same snapshot id, and with on_mention="drop" no kept record mentions
   anyone who did not say yes (and its text is left as it was).
Lineage (who is in the snapshot, as author and as a kept mention) is checked on the way.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from askfirst import (
    Ledger,
    NewEvent,
    SnapshotManifest,
    SubjectIn,
    build_snapshot,
    decide,
    open_ledger,
    parse_policy,
    read_snapshot,
    snapshots_of,
)
from conftest import fresh_pg_url, publish_all

US = 1_000_000
DAY = 86_400 * US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = datetime(2021, 6, 1, tzinfo=UTC)
BASE_US = int((BASE - EPOCH).total_seconds()) * US

# genai-training: off by default; version 2 widened version 1, so v1 grants need re-consent.
# feed-ranking: on by default where the law allows (US, IN), 10 days after the notice.
POLICY = parse_policy(
    """
[purposes.genai-training]
title = "Use my data to train content-creation AI models"
version = 2
categories = ["profile", "post", "comment", "article", "video", "ai-prompt"]
default = "off"
honours_gpc = true

[[purposes.genai-training.history]]
version = 1
categories = ["profile", "post"]

[purposes.feed-ranking]
title = "Rank my feed with AI"
version = 1
categories = ["post", "comment"]
default = "on"
grace_days = 10
honours_gpc = false

[jurisdictions]
opt_out = ["US", "IN"]
""",
    "test_gate_properties policy",
)
NEVER_USED = ("message", "security", "payment")
REQUIRED = ("record_id", "author_id", "category", "created_at", "text")


def at_dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def to_us(dt: datetime) -> int:
    d = dt.astimezone(UTC) - EPOCH
    return (d.days * 86_400 + d.seconds) * US + d.microseconds


# ---- finding mentions by hand -----------------------------------------------------------

HANDLE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def handle_tokens(text: str) -> set[str]:
    """The @handles in ``text``, lower-cased: after each '@' the longest run of ASCII
    letters, digits, '_', '.' and '-', less trailing '.' and '-'; it must start with a
    letter, digit or '_'."""
    found = set()
    for i, ch in enumerate(text):
        if ch != "@":
            continue
        j = i + 1
        while j < len(text) and text[j] in HANDLE_CHARS:
            j += 1
        token = text[i + 1 : j].rstrip(".-")
        if token and token[0] not in ".-":
            found.add(token.lower())
    return found


def _wordy(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def has_word(text: str, phrase: str) -> bool:
    """``phrase`` occurs in ``text`` as a whole word (or words), in any case."""
    t, p = text.lower(), phrase.strip().lower()
    if not p:
        return False
    k = t.find(p)
    while k >= 0:
        before = t[k - 1] if k else ""
        after = t[k + len(p)] if k + len(p) < len(t) else ""
        if not _wordy(before) and not _wordy(after):
            return True
        k = t.find(p, k + 1)
    return False


# ---- the ledger --------------------------------------------------------------------------

SUBJECT_IDS = ("m0", "m1", "m2", "m3", "m4", "m5")
STRANGERS = ("ghost", "x-9")  # never registered
PURPOSES = ("genai-training", "feed-ranking")
JURISDICTIONS = ("US", "DE", "IN", "", "GB", "US")
# Names share words and letters, so that one hides in another, and some start with a letter
# outside ASCII (which a handle cannot hold), including Turkish and Greek ones whose case
# rules differ between Python and Arrow.
NAME_POOL = ("Anna Keller", "Anna", "Ann Lee", "Lee", "Bob", "Zoë Lind", "Ørsted", "Élise",
             "Jürgen Groß", "J.R.", "O'Brien", "Li", "İbrahim Yılmaz", "Νίκος")  # fmt: skip  # noqa: RUF001
HANDLE_POOL = ("anna.k", "anna", "bob_1", "li", "x-y", "a.b-c", "zoe")

names = st.one_of(
    st.sampled_from(NAME_POOL),
    st.text(alphabet="aeloØé", min_size=2, max_size=5).map(str.capitalize),
).filter(lambda n: n.strip().lower() != "redacted")
handles = st.one_of(
    st.sampled_from(HANDLE_POOL),
    st.from_regex(r"[a-z0-9_]([a-z0-9_.\-]{0,4}[a-z0-9_])?", fullmatch=True),
)
CASES = (str, str.lower, str.upper, str.title, str.swapcase)


@dataclass
class Spec:
    """One subject as drawn: what it is registered with."""

    id: str
    kind: str
    handle: str | None  # lower-case, as the ledger keeps it
    handle_given: str | None  # as given to register (any case, perhaps a leading '@')
    names: list[str]
    jurisdiction: str
    minor: bool | None
    birth_date: date | None
    status: str

    def subject_in(self) -> SubjectIn:
        return SubjectIn(
            id=self.id,
            kind=self.kind,
            jurisdiction=self.jurisdiction or None,
            handle=self.handle_given,
            names=self.names,
            minor=self.minor,
            birth_date=self.birth_date,
            status=self.status,
        )


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Spec]:
    out: dict[str, Spec] = {}
    for sid in SUBJECT_IDS:
        handle = draw(handles) if draw(st.integers(0, 4)) else None
        if handle is not None and handle in {s.handle for s in out.values()}:
            handle = f"{handle}_{sid}"  # handles are unique
        given_handle = None
        if handle is not None:
            given_handle = draw(st.sampled_from(["", "@"])) + draw(st.sampled_from(CASES))(handle)
        # m0 is an adult with an open account, who will say yes early on
        plain = sid == "m0"
        age = "adult" if plain else draw(st.sampled_from(["adult"] * 6 + ["minor", "birth"]))
        kinds = ["member", "organization"] if plain else ["member"] * 3 + ["organization", "person"]
        out[sid] = Spec(
            id=sid,
            kind=draw(st.sampled_from(kinds)),
            handle=handle,
            handle_given=given_handle,
            names=draw(st.lists(names, max_size=2)),
            jurisdiction=draw(st.sampled_from(JURISDICTIONS)),
            minor=True if age == "minor" else None,
            # 18 within the ledger's first months
            birth_date=(
                draw(st.dates(date(2003, 6, 1), date(2004, 1, 31))) if age == "birth" else None
            ),
            status="active"
            if plain
            else draw(st.sampled_from(["active"] * 9 + ["closed", "deceased", "deactivated"])),
        )
    return out


gaps = st.one_of(
    st.sampled_from([0, 1, DAY, 5 * DAY, 10 * DAY, 40 * DAY]),
    st.integers(min_value=0, max_value=20 * DAY),
)
STEP_KINDS = ["grant"] * 6 + ["grant-v1", "withdraw", "object", "gpc", "status", "minor",
                              "notice", "notice", "jurisdiction", "withdraw"]  # fmt: skip


@st.composite
def steps(draw: st.DrawFn, purpose: str) -> list[tuple[str, str, str, int]]:
    """(kind, subject, purpose or value, gap in micros). A subject's first step registers it;
    a subject that never comes up stays unknown. Choices and notices are mostly for
    ``purpose``, the one the snapshot is built for."""
    others = draw(st.lists(st.sampled_from(SUBJECT_IDS[1:]), min_size=1, max_size=5, unique=True))
    ids = [others[0], "m0", *others[1:]]
    # most subjects are registered first (one may come later), and many say yes early
    out = [("register", sid, "", draw(gaps)) for sid in ids[1:]]
    out += [
        ("grant", sid, purpose, draw(gaps)) for sid in ids if sid == "m0" or draw(st.booleans())
    ]
    for _ in range(draw(st.integers(min_value=2, max_value=24))):
        kind = draw(st.sampled_from(STEP_KINDS))
        detail = {
            "status": st.sampled_from(["closed", "active", "deactivated", "deceased", "active"]),
            "minor": st.sampled_from(["false", "true", "false"]),
            "jurisdiction": st.sampled_from(JURISDICTIONS),
        }.get(kind, st.sampled_from([purpose, *PURPOSES, purpose]))
        out.append((kind, draw(st.sampled_from(ids)), draw(detail), draw(gaps)))
    # often a snapshot is built as of a moment, and then someone stops (reaching back)
    if draw(st.integers(0, 2)):
        out.append(("as-of", "m0", "", draw(gaps)))
        stops = st.sampled_from([("withdraw", purpose), ("object", purpose), ("gpc", ""),
                                 ("status", "closed"), ("status", "deceased"),
                                 ("status", "deactivated"), ("minor", "true"),
                                 ("jurisdiction", "GB")])  # fmt: skip
        for _ in range(draw(st.integers(1, 3))):
            kind, detail = draw(stops)
            sid = draw(st.sampled_from(["m0", *ids]))
            out.append((kind, sid, detail, draw(st.sampled_from([1, DAY, 3 * DAY]))))
    return out


@dataclass
class World:
    """What was written to the ledger, as the checks need it."""

    specs: dict[str, Spec]
    registered: set[str]
    status: dict[str, str]  # at the head
    times: list[int]
    head_at: int
    marked: list[int]  # times of the "as-of" steps

    @property
    def protected(self) -> set[str]:
        return {
            sid
            for sid in self.registered
            if self.specs[sid].kind == "person" or self.status[sid] == "deceased"
        }

    def handle_owner(self) -> dict[str, str]:
        return {h: s for s in self.registered if (h := self.specs[s].handle)}


def write_ledger(
    ledger: Ledger, subjects: dict[str, Spec], plan: list[tuple[str, str, str, int]]
) -> World:
    t = BASE_US
    status: dict[str, str] = {}
    stamps: list[int] = []
    marked: list[int] = []
    for kind, sid, detail, gap in plan:
        t += gap
        if kind == "as-of":
            marked.append(t)
            continue
        if sid not in status:  # its first step registers it
            ledger.register([subjects[sid].subject_in()], since=at_dt(t))
            status[sid] = subjects[sid].status
            stamps.append(t)
            continue
        if kind == "register":
            continue
        base: dict[str, Any] = {"subject": sid, "source": "test", "recorded_at": t}
        if kind in ("grant", "grant-v1", "withdraw", "object"):
            value = kind.removesuffix("-v1")
            if value == "grant" and status[sid] in ("closed", "deceased"):
                continue  # the ledger refuses it (tested elsewhere)
            version = 1 if kind == "grant-v1" else None  # None: the current version
            actor = "staff:eve" if kind == "object" else sid
            new = NewEvent(type="choice", actor=actor, purpose=detail, value=value,
                           notice_version=version, **base)  # fmt: skip
        elif kind == "gpc":
            new = NewEvent(type="gpc", actor=sid, value="1", **base)
        elif kind == "notice":
            new = NewEvent(type="notice-delivered", actor="system", purpose=detail, **base)
        else:
            if kind == "status":
                if status[sid] == "deceased":
                    continue  # death is final here: a reactivation would unprotect names
                status[sid] = detail
            new = NewEvent(type=kind, actor="system", value=detail, **base)
        ledger.append(new)
        stamps.append(t)
    head = ledger.head()
    return World(subjects, set(status), status, stamps, head.recorded_at, marked)


# ---- the reference -----------------------------------------------------------------------


@dataclass
class Expect:
    """Decisions as decide() gives them, and what follows for each record."""

    world: World
    purpose: str
    as_of: int
    no: dict[str, str | None]  # subject -> the reason it is no (as-of first), None: yes
    categories: tuple[str, ...]

    @classmethod
    def of(cls, ledger: Ledger, world: World, purpose: str, as_of: int) -> Expect:
        head_at = max(as_of, world.head_at)
        no: dict[str, str | None] = {}
        for sid in SUBJECT_IDS + STRANGERS:
            then = decide(ledger, sid, purpose, at=at_dt(as_of))
            now = decide(ledger, sid, purpose, at=at_dt(head_at))
            no[sid] = None
            if not then.allowed:
                no[sid] = str(then.reason)
            elif not now.allowed:
                no[sid] = str(now.reason)
        return cls(world, purpose, as_of, no, POLICY.purpose(purpose).categories)

    def says_no(self, sid: str) -> bool:
        return self.no.get(sid, "unknown-subject") is not None

    def mentioned(self, r: Rec) -> set[str]:
        """Everyone ``r`` mentions, by id, by @handle or (if protected) by name; not its
        author."""
        owner = self.world.handle_owner()
        found = set(r.mentions)
        found |= {owner[h] for h in handle_tokens(r.text) if h in owner}
        found |= {
            sid
            for sid in self.world.protected
            if any(has_word(r.text, n) for n in self.world.specs[sid].names)
        }
        return found - {r.author}

    def bad_mentions(self, r: Rec) -> set[str]:
        return {s for s in self.mentioned(r) if self.says_no(s)}

    def reason(self, r: Rec, on_mention: str) -> str | None:
        """Why ``r`` is left out (DESIGN.md's order), or None when it is kept."""
        if r.malformed:
            return "malformed"
        if r.category in NEVER_USED:
            return "category-never-used"
        if r.category not in self.categories:
            return "category-not-allowed"
        if r.created_us > self.as_of:
            return "created-after-as-of"
        if self.says_no(r.author):
            return self.no.get(r.author) or "unknown-subject"
        if on_mention == "drop" and self.bad_mentions(r):
            return "mention-not-consented"
        return None


# ---- the corpus --------------------------------------------------------------------------

CATEGORIES = ["post", "comment", "profile", "article", "video", "ai-prompt", "message",
              "security", "payment", "story", "Post", "comment", "post", "post"]  # fmt: skip
ZONES = [0, 0, 120, -330, 345, -600, 60]  # minutes east of UTC
WORDS = ["hi", "great post", "thanks", "a@b.c", "@", "@@", "mail me:", "Straße", "ÉTÉ", "k",
         "[redacted]", "_", "-", "."]  # fmt: skip


@st.composite
def iso_times(draw: st.DrawFn, us: int) -> str:
    """``us`` as ISO 8601 text with a zone, in one of the spellings people write."""
    zone = draw(st.sampled_from(ZONES))
    local = at_dt(us).astimezone(timezone(timedelta(minutes=zone)))
    specs_ = ["auto"]
    if local.microsecond % 1000 == 0:
        specs_.append("milliseconds")
    if local.microsecond == 0 and local.second == 0:
        specs_.append("minutes")
    text = local.isoformat(timespec=draw(st.sampled_from(specs_)))
    if draw(st.booleans()):
        text = text.replace("T", " ", 1)
    spelling = draw(st.sampled_from(["+hh:mm", "Z", "z", "+hhmm", "+hh"]))
    if spelling in ("Z", "z") and zone == 0:
        text = text[:-6] + spelling
    elif spelling == "+hhmm":
        text = text[:-3] + text[-2:]
    elif spelling == "+hh" and zone % 60 == 0:
        text = text[:-3]
    return text


@st.composite
def texts(draw: st.DrawFn, subjects: dict[str, Spec], registered: set[str]) -> str:
    """Words, @handles and names (of registered subjects more often than not), with
    punctuation and letters stuck to them, joined by spaces, commas, '@' or nothing."""
    often = [*sorted(registered) * 2, *SUBJECT_IDS]
    hs = [subjects[s].handle for s in often if subjects[s].handle]
    ns = [n for s in often for n in subjects[s].names] or ["Bob"]
    handle_ref = st.builds(
        lambda h, case, end: "@" + case(h) + end,
        st.sampled_from(hs or ["nobody"]),
        st.sampled_from(CASES),
        st.sampled_from(["", "", "", ".", ",", "!", "'s", "x", "-", "_", "é", "-.", ")"]),
    )
    name_ref = st.builds(
        lambda start, n, case, end: start + case(n) + end,
        st.sampled_from(["", "", "", "x", "_", "@", "(", "é", "'"]),
        st.sampled_from(ns),
        st.sampled_from(CASES),
        st.sampled_from(["", "", "", "'s", ".", "x", "_", ")", "é", "-"]),
    )
    fragment = st.one_of(
        handle_ref,
        name_ref,
        st.sampled_from(WORDS),
        st.text(alphabet="ab@._- éØ'\n", max_size=6),
    )
    parts = draw(st.lists(fragment, max_size=6))
    seps = draw(st.lists(st.sampled_from([" ", " ", "", ", ", "\n", "@"]),
                         min_size=len(parts), max_size=len(parts)))  # fmt: skip
    return "".join(p + s for p, s in zip(parts, seps, strict=True))


@dataclass
class Rec:
    """One input record: what the reference needs, and what is written to the file."""

    n: int
    file: int
    malformed: bool
    author: str = ""
    category: str = ""
    created_us: int = 0
    text: str = ""
    mentions: list[str] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)  # JSON object / Parquet row
    line: str | None = None  # a raw JSONL line instead of ``row``

    @property
    def record_id(self) -> str:
        return f"r{self.n}"


@dataclass(frozen=True)
class Layout:
    files: tuple[str, ...]  # formats: "jsonl" or "parquet"
    folder: bool
    created_type: str  # in Parquet: "string", "ts-utc" or "ts-naive"
    ensure_ascii: bool


layouts = st.builds(
    Layout,
    st.sampled_from([("jsonl",), ("parquet",), ("jsonl", "jsonl"), ("jsonl", "parquet")]),
    st.booleans(),
    st.sampled_from(["string", "string", "ts-utc", "ts-naive"]),
    st.booleans(),
).map(lambda lay: Layout(lay.files, lay.folder or len(lay.files) > 1, lay.created_type,
                         lay.ensure_ascii))  # fmt: skip

BAD_TIMES = ["2021-06-01T12:00:00", "2021-02-30T00:00:00Z", "2021-06-01", "soon",
             "2021-06-01T12:00:00 +02:00", "2021-06-01T12:00:60Z", ""]  # fmt: skip
JSON_BREAKS = [
    ("missing", None), ("null", None), ("empty", None), ("time", None),
    ("type", ("created_at", 1622505600)), ("type", ("text", 42)), ("type", ("record_id", 7)),
    ("type", ("author_id", ["m1"])), ("type", ("category", True)),
    ("type", ("mentions", "m1")), ("type", ("mentions", [1])), ("type", ("mentions", [None])),
    ("type", ("mentions", {"m1": 1})), ("type", ("mentions", ["m1", None])),
    ("line", "not json {"), ("line", "[1, 2]"), ("line", '"a string"'), ("line", "null"),
    ("line", "{}"), ("line", '{"record_id": "r-cut", "text": "hi'),
]  # fmt: skip
PARQUET_BREAKS = [("null", None), ("empty", None), ("time", None),
                  ("type", ("mentions", [None])), ("type", ("mentions", ["m1", None]))]  # fmt: skip


@st.composite
def records(draw: st.DrawFn, ex: Expect, layout: Layout) -> list[Rec]:
    """Records by yes-sayers, by others the ledger knows and by strangers. Each is drawn to
    be usable but for its author, or to fail one early rule (others may fail too)."""
    subjects, as_of = ex.world.specs, ex.as_of
    yes = [s for s in SUBJECT_IDS if not ex.says_no(s)]
    known = sorted(ex.world.registered)
    anyone = [*known, *SUBJECT_IDS, *STRANGERS]
    out = []
    for n in range(draw(st.integers(min_value=0, max_value=14))):
        k = draw(st.integers(0, len(layout.files) - 1))
        fmt = layout.files[k]
        fate = draw(st.sampled_from(["usable"] * 6 + ["malformed", "category", "late"]))
        if fate == "category":
            category = draw(st.sampled_from(CATEGORIES))
        else:
            category = draw(st.sampled_from(ex.categories))
        offset = draw(
            st.one_of(
                st.sampled_from([0, -1, 1, -DAY, DAY, -400 * DAY]),
                st.integers(-60 * DAY, 10 * DAY),
            )
            if fate == "late"
            else st.one_of(st.sampled_from([0, -1, -DAY]), st.integers(-60 * DAY, 0))
        )
        mentions = draw(
            st.one_of(
                st.none(),
                st.lists(st.sampled_from(SUBJECT_IDS + STRANGERS), max_size=3),
            )
        )
        r = Rec(
            n=n,
            file=k,
            malformed=False,
            author=draw(st.sampled_from([*yes * 6, *known] if fate == "usable" else anyone)),
            category=category,
            created_us=as_of + offset,
            text=draw(texts(subjects, ex.world.registered)),
            mentions=mentions or [],
        )
        created: Any
        if fmt == "parquet" and layout.created_type != "string":
            created = at_dt(r.created_us)
            if layout.created_type == "ts-naive":
                created = created.replace(tzinfo=None)
        else:
            created = draw(iso_times(r.created_us))
        r.row = {"record_id": r.record_id, "author_id": r.author, "category": r.category,
                 "created_at": created, "text": r.text}  # fmt: skip
        if mentions is not None or fmt == "parquet" or draw(st.booleans()):
            r.row["mentions"] = mentions
        if fmt == "jsonl" and draw(st.integers(0, 5)) == 0:
            r.row["likes"] = 3  # a column the gate does not know: ignored
        if fate == "malformed":
            r.malformed = True
            breaks = JSON_BREAKS if fmt == "jsonl" else PARQUET_BREAKS
            how, what = draw(st.sampled_from(breaks))
            if how == "missing":
                del r.row[draw(st.sampled_from(REQUIRED))]
            elif how == "null":
                r.row[draw(st.sampled_from(REQUIRED))] = None
            elif how == "empty":
                r.row[draw(st.sampled_from(["record_id", "author_id", "category"]))] = ""
            elif how == "time":
                if isinstance(r.row["created_at"], str):
                    r.row["created_at"] = draw(st.sampled_from(BAD_TIMES))
                else:
                    r.row["created_at"] = None
            elif how == "type":
                key, value = what
                r.row[key] = value
            else:
                r.line = what
        out.append(r)
    return out


def write_corpus(folder: Path, layout: Layout, recs: list[Rec]) -> Path:
    """The corpus files; returns the path to give build_snapshot."""
    where = folder / "corpus"
    where.mkdir()
    paths = []
    for k, fmt in enumerate(layout.files):
        mine = [r for r in recs if r.file == k]
        path = where / f"part-{k}.{fmt}"
        if fmt == "jsonl":
            lines = [
                r.line
                if r.line is not None
                else json.dumps(r.row, ensure_ascii=layout.ensure_ascii)
                for r in mine
            ]
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        else:
            created = {
                "string": pa.string(),
                "ts-utc": pa.timestamp("us", tz="UTC"),
                "ts-naive": pa.timestamp("us"),
            }[layout.created_type]
            schema = pa.schema(
                [
                    *((c, pa.string()) for c in ("record_id", "author_id", "category")),
                    ("created_at", created),
                    ("text", pa.string()),
                    ("mentions", pa.list_(pa.string())),
                ]
            )
            rows = [{c: r.row.get(c) for c in schema.names} for r in mine]
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
        paths.append(path)
    if not layout.folder:
        return paths[0]
    # files a corpus folder may hold that are not read
    (where / ".hidden.jsonl").write_text('{"record_id": "hidden"}\n', encoding="utf-8")
    (where / "README.txt").write_text("not a corpus file\n", encoding="utf-8")
    return where


# ---- the property ------------------------------------------------------------------------


def build(
    ledger: Ledger, purpose: str, corpus: Path, out: Path, as_of: int, on_mention: str
) -> tuple[SnapshotManifest, dict[str, dict[str, Any]]]:
    manifest = build_snapshot(
        ledger, purpose, corpus, out, as_of=at_dt(as_of), on_mention=on_mention
    )
    again, table = read_snapshot(out)
    assert again == manifest
    rows = table.to_pylist()
    by_id = {row["record_id"]: row for row in rows}
    assert len(by_id) == len(rows), "a record was written twice"
    return manifest, by_id


def check(
    ex: Expect,
    recs: list[Rec],
    manifest: SnapshotManifest,
    kept: dict[str, dict[str, Any]],
    on_mention: str,
) -> None:
    by_id = {r.record_id: r for r in recs if not r.malformed}
    bad_handles = {ex.world.specs[s].handle for s in ex.world.registered if ex.says_no(s)} - {None}
    # 3. every record kept or counted once, under the first reason that applies
    want = {r.record_id: ex.reason(r, on_mention) for r in recs}
    assert set(kept) <= set(by_id), "a malformed or unknown record was kept"
    wrong = {k: why for k, why in want.items() if (why is None) != (k in kept)}
    assert not wrong, f"kept or left out against the reference (its reasons): {wrong}"
    counts = Counter(why for why in want.values() if why is not None)
    assert manifest.input_records == len(recs)
    assert manifest.output_records == len(kept)
    assert manifest.input_records == manifest.output_records + sum(manifest.excluded.values())
    assert {k: v for k, v in manifest.excluded.items() if v} == dict(counts)
    redacted = 0
    bad_by_record = {}
    for rid, row in kept.items():
        r = by_id[rid]
        # 1. no author who said no, at the as-of time or at the head
        assert not ex.says_no(r.author), f"{rid} by {r.author} ({ex.no.get(r.author)})"
        assert (row["category"], to_us(row["created_at"])) == (r.category, r.created_us)
        bad = ex.bad_mentions(r)
        if not bad:
            assert row["text"] == r.text, f"{rid} was changed with nobody to redact"
            continue
        assert on_mention == "redact", f"{rid} mentions {sorted(bad)} and was not dropped"
        redacted += len(bad)
        bad_by_record[rid] = sorted(bad)
        # 2. no @handle of anyone who said no; no name of the protected or mentioned ones
        text = row["text"]
        left = handle_tokens(text) & bad_handles
        assert not left, f"{rid}: @{sorted(left)} left in {text!r} (from {r.text!r})"
        for s in ex.world.registered:
            if ex.says_no(s) and (s in ex.world.protected or s in bad):
                for n in ex.world.specs[s].names:
                    assert not has_word(text, n), f"{rid}: {n!r} of {s} left in {text!r}"
    assert manifest.redacted_mentions == redacted, bad_by_record


def check_lineage(
    ledger: Ledger, ex: Expect, recs: list[Rec], kept: dict[str, Any], out: Path
) -> None:
    """Lineage: each subject's records in the snapshot, as author and as a kept mention."""
    by_id = {r.record_id: r for r in recs}
    authors = Counter(by_id[rid].author for rid in kept)
    mentions = Counter(s for rid in kept for s in ex.mentioned(by_id[rid]) if not ex.says_no(s))
    for sid in SUBJECT_IDS:
        got = [e for e in snapshots_of(ledger, sid) if e["path"] == str(out.resolve())]
        want = [(authors[sid], mentions[sid])] if authors[sid] or mentions[sid] else []
        assert [(e["author_records"], e["mention_records"]) for e in got] == want, sid


def draw_ledger(ledger: Ledger, data: st.DataObject) -> tuple[str, World, int]:
    """Write a random history into ``ledger``; the purpose and as-of time to build for."""
    purpose = data.draw(st.sampled_from(PURPOSES), label="purpose")
    subjects = data.draw(specs(), label="subjects")
    world = write_ledger(ledger, subjects, data.draw(steps(purpose), label="steps"))
    candidates = sorted(
        {BASE_US - DAY, world.head_at + DAY}
        | {t + d for t in world.times for d in (-1, 0, 1)}
        | {(a + b) // 2 for a, b in zip(world.times, world.times[1:], strict=False)}
    )
    # often just before the last stops, or one of the latest times (more have said yes)
    latest_first = candidates[::-1]
    pick = st.integers(0, len(latest_first) - 1).map(latest_first.__getitem__)
    late = st.integers(0, len(latest_first) - 1).map(lambda k: latest_first[k // 4])
    as_of = data.draw(st.one_of(st.sampled_from(world.marked or candidates), pick, late),
                      label="as_of")  # fmt: skip
    return purpose, world, as_of


def gate_property(ledger: Ledger, data: st.DataObject) -> None:
    purpose, world, as_of = draw_ledger(ledger, data)
    layout = data.draw(layouts, label="layout")
    ex = Expect.of(ledger, world, purpose, as_of)
    recs = data.draw(records(ex, layout), label="records")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = write_corpus(folder, layout, recs)
        manifest, kept = build(ledger, purpose, corpus, folder / "a", as_of, "redact")
        check(ex, recs, manifest, kept, "redact")
        check_lineage(ledger, ex, recs, kept, folder / "a")
        # 4. the same inputs give the same snapshot id, wherever it is built
        again, _ = build(ledger, purpose, corpus, folder / "b", as_of, "redact")
        assert again.snapshot_id == manifest.snapshot_id
        dropped, kept = build(ledger, purpose, corpus, folder / "c", as_of, "drop")
        check(ex, recs, dropped, kept, "drop")


@contextmanager
def fresh_ledger(pg_admin: sa.Engine | None = None) -> Iterator[Ledger]:
    if pg_admin is None:
        with (
            tempfile.TemporaryDirectory() as d,
            open_ledger(f"sqlite:///{Path(d) / 'ledger.db'}", POLICY, create=True) as led,
        ):
            publish_all(led, at=BASE_US - 100 * DAY)
            yield led
        return
    url, schema = fresh_pg_url(pg_admin)
    try:
        with open_ledger(url, POLICY, create=True) as led:
            publish_all(led, at=BASE_US - 100 * DAY)
            yield led
    finally:
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_gate_keeps_only_what_may_be_used_sqlite(data: st.DataObject) -> None:
    with fresh_ledger() as ledger:
        gate_property(ledger, data)


@pytest.mark.postgres
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_gate_keeps_only_what_may_be_used_postgres(
    pg_admin: sa.Engine, data: st.DataObject
) -> None:
    with fresh_ledger(pg_admin) as ledger:
        gate_property(ledger, data)


# ---- bugs found by the properties, kept as small examples --------------------------------


@pytest.fixture
def granted(tmp_path: Path) -> Iterator[Ledger]:
    """A ledger where m1 (in Germany) said yes to genai-training a day after BASE."""
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", POLICY, create=True) as led:
        led.register([SubjectIn(id="m1", jurisdiction="DE")], since=BASE)
        led.append(NewEvent(type="choice", subject="m1", actor="m1", source="test",
                            purpose="genai-training", value="grant",
                            recorded_at=BASE_US + DAY))  # fmt: skip
        yield led


AS_OF = at_dt(BASE_US + 3 * DAY)


def test_a_csv_corpus_is_read(granted: Ledger, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.csv"
    corpus.write_text(
        "record_id,author_id,category,created_at,text,mentions\n"
        'r1,m1,post,2021-06-01T12:00:00Z,hello,"[]"\n',
        encoding="utf-8",
    )
    m = build_snapshot(granted, "genai-training", corpus, tmp_path / "out", as_of=AS_OF)
    assert (m.input_records, m.output_records) == (1, 1)


def test_a_time_with_a_lower_case_z_is_read(granted: Ledger, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    row = {"record_id": "r1", "author_id": "m1", "category": "post",
           "created_at": "2021-06-01T12:00:00z", "text": "hello"}  # fmt: skip
    corpus.write_text(json.dumps(row) + "\n", encoding="utf-8")
    m = build_snapshot(granted, "genai-training", corpus, tmp_path / "out", as_of=AS_OF)
    assert (m.excluded["malformed"], m.output_records) == (0, 1)


def test_a_protected_name_stuck_to_a_redacted_handle_is_redacted(
    granted: Ledger, tmp_path: Path
) -> None:
    granted.register(
        [
            SubjectIn(id="m2", handle="anna.k", jurisdiction="DE"),  # no choice: no
            SubjectIn(id="p1", kind="person", names=["Ørsted"]),  # no choice: no
        ],
        since=at_dt(BASE_US + 2 * DAY),
    )
    corpus = tmp_path / "corpus.jsonl"
    row = {"record_id": "r1", "author_id": "m1", "category": "post",
           "created_at": "2021-06-01T12:00:00Z", "text": "hi @anna.kØrsted"}  # fmt: skip
    corpus.write_text(json.dumps(row) + "\n", encoding="utf-8")
    build_snapshot(granted, "genai-training", corpus, tmp_path / "out", as_of=AS_OF)
    text = read_snapshot(tmp_path / "out")[1].column("text").to_pylist()[0]
    assert "[redacted]" in text
    assert not has_word(text, "Ørsted"), text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("İbrahim Y\u0131lmaz", "met İbrahim Y\u0131lmaz today"),  # Turkish dotless i
        ("Νίκος", "met ΝΊΚΟΣ today"),
    ],
    ids=["turkish", "greek"],
)
def test_a_protected_name_is_found_in_any_script(
    granted: Ledger, tmp_path: Path, name: str, text: str
) -> None:
    granted.register(
        [SubjectIn(id="p1", kind="person", names=[name])],  # no choice: no
        since=at_dt(BASE_US + 2 * DAY),
    )
    corpus = tmp_path / "corpus.jsonl"
    row = {"record_id": "r1", "author_id": "m1", "category": "post",
           "created_at": "2021-06-01T12:00:00Z", "text": text}  # fmt: skip
    corpus.write_text(json.dumps(row) + "\n", encoding="utf-8")
    build_snapshot(granted, "genai-training", corpus, tmp_path / "out", as_of=AS_OF)
    assert read_snapshot(tmp_path / "out")[1].column("text").to_pylist() == ["met [redacted] today"]
