"""Notices by e-mail: who is owed one, sending it over SMTP, and the one-click "no".

:func:`queue_notices` (``askfirst notice send PURPOSE``) puts one row in the ``mail``
table for every subject with an address who lives where a default of the purpose could
apply and has not been told of its current version: one set-based ``INSERT ... SELECT``,
keyed by the SHA-256 of (subject, purpose, version), so queueing again adds nothing.

:func:`send_due` / :func:`run` (``askfirst outbox run``, and a thread of ``askfirst
serve``) claim due rows with a lease, as the partners' outbox does, and send them over
one SMTP connection. Only once the server accepted a message is ``notice-delivered``
(channel ``email``) recorded and the row marked sent, in one transaction; a refused
message records nothing and is tried again with exponential backoff. A subject whose
address is gone, whose account closed, or who has since said no is dropped unsent.

Each message carries a one-click "no" (RFC 8058): a signed, expiring token naming the
subject, purpose and version, used by ``POST /one-click/TOKEN``
(:func:`say_no`), which records the withdrawal and spends the token in one transaction.
"""

from __future__ import annotations

import email.policy
import hashlib
import html
import os
import secrets
import smtplib
import ssl
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Connection, bindparam, delete, func, insert, select, text, update

from askfirst import config, notices, privacy, times
from askfirst.errors import InputError
from askfirst.ledger import Event, EventType, Ledger, NewEvent, store
from askfirst.ledger.tables import (
    choice_state,
    events,
    mail,
    notice_state,
    one_click,
    subject_state,
    subjects,
)
from askfirst.recipients import backoff_s

SENDER = "system:mail"  # the actor of every notice-delivered event this module records
CHANNEL = "email"
LEASE_US = 120 * times.MICROS  # a claimed message is not tried by another worker meanwhile
FLUSH_EVERY = 200  # accepted messages recorded per transaction, at most
FLUSH_AFTER_S = 0.5  # ... and no accepted message waits longer than this to be recorded
ONE_CLICK_FILE = "one-click.secret"
ONE_CLICK_DAYS = 90  # how long a one-click "no" link works
_SALT = "askfirst.one-click"


# ---- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Smtp:
    """Where and how mail is sent, and what its links point at."""

    host: str
    port: int
    security: Literal["plain", "starttls", "tls"]
    mail_from: str
    base_url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    timeout_s: float = 30.0
    # A TLS context of the caller's (tests: one that trusts a local certificate).
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_url(cls, url: str, *, mail_from: str, base_url: str) -> Smtp:
        """``smtp://USER:PASS@HOST:PORT?starttls=1`` or ``smtps://...`` (implicit TLS);
        InputError in one line (never echoing the password) when it is not one."""
        shown = _without_password(url)
        usage = (
            f"{config.SMTP_URL.env}={shown!r}: give smtp://USER:PASS@HOST:PORT?starttls=1, "
            "or smtps://USER:PASS@HOST:465 for implicit TLS"
        )
        try:
            parts = urlsplit(url.strip())
            port = parts.port
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            raise InputError(usage) from None
        if (
            parts.scheme not in ("smtp", "smtps")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise InputError(usage)
        unknown = sorted(set(query) - {"starttls", "cafile", "timeout"})
        if unknown:
            raise InputError(f"{usage} (unknown option {unknown[0]!r})")
        starttls = query.get("starttls", ["0"])[-1].lower()
        if starttls not in ("0", "1", "true", "false", "yes", "no"):
            raise InputError(f"{usage} (starttls is 1 or 0)")
        security: Literal["plain", "starttls", "tls"] = "plain"
        if parts.scheme == "smtps":
            security = "tls"
        elif starttls in ("1", "true", "yes"):
            security = "starttls"
        timeout = query.get("timeout", ["30"])[-1]
        try:
            timeout_s = float(timeout)
        except ValueError:
            raise InputError(f"{usage} (timeout is in seconds)") from None
        if not 0 < timeout_s <= 600:
            raise InputError(f"{usage} (timeout is more than 0 and at most 600 seconds)")
        return cls(
            host=parts.hostname,
            port=port or (465 if security == "tls" else 587 if security == "starttls" else 25),
            security=security,
            mail_from=_check_from(mail_from),
            base_url=_check_base(base_url),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            cafile=query.get("cafile", [None])[-1],
            timeout_s=timeout_s,
        )

    @classmethod
    def from_env(cls) -> Smtp | None:
        """The settings in the environment; None when ``ASKFIRST_SMTP_URL`` is not set."""
        url = os.environ.get(config.SMTP_URL.env, "").strip()
        if not url:
            return None
        return cls.from_url(
            url,
            mail_from=os.environ.get(config.MAIL_FROM.env, ""),
            base_url=os.environ.get(config.BASE_URL.env, ""),
        )

    def tls_context(self) -> ssl.SSLContext:
        if self.context is not None:
            return self.context
        return ssl.create_default_context(cafile=self.cafile)

    def connect(self) -> smtplib.SMTP:
        """An open, signed-in connection to the server."""
        server: smtplib.SMTP
        if self.security == "tls":
            server = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=self.tls_context()
            )
        else:
            server = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            server.ehlo()
            if self.security == "starttls":
                server.starttls(context=self.tls_context())
                server.ehlo()
            if self.username:
                server.login(self.username, self.password or "")
        except BaseException:
            server.close()
            raise
        return server


def _without_password(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
        if parts.password is None:
            return url.strip()
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    except ValueError:
        return "(not a URL)"


def _check_from(value: str) -> str:
    _name, addr = parseaddr(value)
    if not value.strip() or "@" not in addr or any(c in value for c in "\r\n"):
        raise InputError(
            f"{config.MAIL_FROM.env}={value!r}: give the address notices are sent from, "
            "e.g. 'askfirst <privacy@example.com>'"
        )
    return value.strip()


def _check_base(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise InputError(
            f"{config.BASE_URL.env}={value!r}: give the public address of the web app, "
            "e.g. https://askfirst.example.com (the one-click links point there)"
        )
    return value.strip().rstrip("/")


# ---- the one-click "no" -----------------------------------------------------------------


class LinkRefused(InputError):
    """A one-click link that cannot be used: tampered with, expired, or used already."""

    def __init__(self, why: Literal["tampered", "expired", "used"], message: str) -> None:
        super().__init__(message)
        self.why = why


@dataclass(frozen=True)
class Link:
    """What a one-click token says: whose "no", to which purpose and notice version."""

    subject: str
    purpose: str
    version: int
    expires: int  # seconds since 1970


def one_click_secret(key_dir: Path) -> str:
    """The secret one-click links are signed with, made on first use beside the receipt
    key and the session secret."""
    path = Path(key_dir) / ONE_CLICK_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def make_token(
    secret: str, subject: str, purpose: str, version: int, *, expires: int | None = None
) -> str:
    """A signed token for one subject's "no" to one purpose, working until ``expires``
    (seconds since 1970; by default :data:`ONE_CLICK_DAYS` from now)."""
    until = expires if expires is not None else int(time.time()) + ONE_CLICK_DAYS * 86_400
    serializer = URLSafeSerializer(secret, salt=_SALT)
    return str(serializer.dumps([subject, purpose, version, until]))


def read_token(secret: str, token: str, *, now: float | None = None) -> Link:
    """What ``token`` says; LinkRefused if it was not made with ``secret`` or has expired."""
    try:
        subject, purpose, version, until = URLSafeSerializer(secret, salt=_SALT).loads(token)
        link = Link(str(subject), str(purpose), int(version), int(until))
    except (BadSignature, TypeError, ValueError):
        raise LinkRefused(
            "tampered",
            "This link is not one we sent, or it was changed on the way: nothing was recorded. "
            "Copy the whole link from the e-mail, or sign in and say no on your settings page.",
        ) from None
    if (now if now is not None else time.time()) >= link.expires:
        raise LinkRefused(
            "expired",
            "This link has expired: nothing was recorded. Sign in and say no on your "
            "settings page; it takes one click there too.",
        )
    return link


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_state(ledger: Ledger, secret: str, token: str) -> Link:
    """``token``'s link if it can still be used; else LinkRefused. Writes nothing."""
    link = read_token(secret, token)
    with ledger.engine.connect() as conn:
        used = conn.execute(
            select(one_click.c.used_at).where(one_click.c.token_hash == token_hash(token))
        ).first()
    if used is not None:
        raise _used(used.used_at)
    return link


def _used(at: int) -> LinkRefused:
    return LinkRefused(
        "used",
        f"This link was already used, on {privacy.day(at)}: your no was recorded then, and "
        "nothing new was recorded now.",
    )


def used_seq(ledger: Ledger, secret: str, token: str) -> int | None:
    """The choice event a used link stands on (its receipt), or None if it was not used.
    A tampered token is refused; an expired one that was used still has its receipt."""
    try:
        read_token(secret, token)
    except LinkRefused as e:
        if e.why != "expired":
            raise
    with ledger.engine.connect() as conn:
        seq = conn.execute(
            select(one_click.c.seq).where(one_click.c.token_hash == token_hash(token))
        ).scalar()
    return None if seq is None else int(seq)


def say_no(ledger: Ledger, secret: str, token: str) -> privacy.Choice:
    """Record the "no" ``token`` carries (a ``withdraw`` by the subject, source
    ``one-click``) and spend the token, in one transaction. A link works once:
    LinkRefused for a used, expired or tampered one, and nothing is written."""
    link = read_token(secret, token)
    digest = token_hash(token)
    now = times.to_micros(times.now())
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)  # two clicks at once: the second sees the first's row
        used = conn.execute(
            select(one_click.c.used_at).where(one_click.c.token_hash == digest)
        ).first()
        if used is not None:
            raise _used(used.used_at)
        standing = conn.execute(
            select(choice_state.c.action, choice_state.c.seq).where(
                choice_state.c.subject_id == link.subject,
                choice_state.c.purpose == link.purpose,
            )
        ).first()
        if standing is not None and standing.action in ("withdraw", "object"):
            # Already no: nothing new to record (as privacy.choose would say).
            event = Event.from_row(
                conn.execute(select(events).where(events.c.seq == standing.seq)).one()
            )
            choice = privacy.Choice(event, changed=False)
        else:
            new = NewEvent(
                type=EventType.CHOICE,
                subject=link.subject,
                actor=link.subject,
                source="one-click",
                purpose=link.purpose,
                value=privacy.NO,
            )
            (event,) = ledger.append_in(conn, [new])
            choice = privacy.Choice(event, changed=True)
        conn.execute(insert(one_click).values(token_hash=digest, used_at=now, seq=event.seq))
    return choice


# ---- queueing -----------------------------------------------------------------------------


def mail_key(subject: str, purpose: str, version: int) -> str:
    """The idempotency key of one subject's e-mail about one notice version."""
    return hashlib.sha256(f"{subject}\x1f{purpose}\x1f{version}".encode()).hexdigest()


def _sqlite_key(subject: str, purpose: str, version: int) -> str:
    return mail_key(subject, purpose, int(version))


def _current(ledger: Ledger, purpose: str) -> notices.Published:
    p = ledger.policy.purpose(purpose)
    current = notices.current(ledger, purpose)
    if current is None:
        raise InputError(
            f"purpose {purpose!r} version {p.version} has not been published, so nobody can "
            f"be told of it: publish it first ('askfirst notice publish {purpose}')"
        )
    return current


def why_nobody(ledger: Ledger, purpose: str) -> str | None:
    """Why no e-mail can be owed for ``purpose`` at all, or None when some may be."""
    current = _current(ledger, purpose)
    if current.terms.default != "on":
        return (
            f"purpose {purpose!r} is off by default: no default can apply to anyone, so "
            "nobody is owed a notice by e-mail"
        )
    if not ledger.policy.jurisdiction_rules.opt_out:
        return (
            f"the policy has no opt-out place: no default of {purpose!r} can apply to "
            "anyone, so nobody is owed a notice by e-mail"
        )
    return None


def _opt_out_places(ledger: Ledger, conn: Connection) -> list[str]:
    """The jurisdictions subjects live in whose regime is opt-out (read from the few
    distinct values, so that the policy's own rules decide, subdivisions included)."""
    places = conn.execute(
        select(subject_state.c.jurisdiction)
        .distinct()
        .where(subject_state.c.jurisdiction.is_not(None))
    ).scalars()
    return sorted(p for p in places if p and str(ledger.policy.regime(p)) == "opt-out")


def queue_notices(ledger: Ledger, purpose: str) -> int:
    """Queue an e-mail of ``purpose``'s current notice for every subject who has an
    address, is active and not a minor, lives where its default could apply, has not
    said no (or yes under terms that still hold), and was not told of this version yet;
    returns how many were queued (none when the purpose is off by default). Refused if
    the current version was never published."""
    current = _current(ledger, purpose)
    terms = current.terms
    if why_nobody(ledger, purpose) is not None:
        return 0
    p = ledger.policy.purpose(purpose)
    now = times.to_micros(times.now())
    today = times.from_micros(now).date().isoformat()
    with store.write(ledger.engine) as conn:
        places = _opt_out_places(ledger, conn)
        if not places:
            return 0
        postgres = store.is_postgres(ledger.engine)
        if postgres:
            key = (
                "encode(sha256(convert_to(s.subject_id || chr(31) || CAST(:pk AS TEXT) || "
                "chr(31) || CAST(:vk AS TEXT), 'UTF8')), 'hex')"
            )
        else:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.create_function("askfirst_mail_key", 3, _sqlite_key, deterministic=True)
            key = "askfirst_mail_key(s.subject_id, :pk, :vk)"
        gpc = (
            # A GPC signal is a no, unless a yes came after it (then the choice decides).
            "AND (s.gpc_seq IS NULL OR EXISTS (SELECT 1 FROM choice_state g WHERE "
            "g.subject_id = s.subject_id AND g.purpose = :p AND g.action = 'grant' "
            "AND g.seq > s.gpc_seq))"
            if p.honours_gpc
            else ""
        )
        statement = text(
            f"""
            INSERT INTO mail (subject_id, purpose, version, idempotency_key, created_at,
                              attempts, next_attempt_at)
            SELECT s.subject_id, CAST(:p AS VARCHAR(64)), CAST(:v AS INTEGER), {key},
                   CAST(:now AS BIGINT), 0, CAST(:now AS BIGINT)
            FROM subject_state s JOIN subjects d ON d.id = s.subject_id
            WHERE d.email IS NOT NULL
              AND s.status = 'active'
              AND s.jurisdiction IN :places
              AND (s.minor IS NULL OR s.minor = 'false'
                   OR (s.minor LIKE 'until:%' AND s.minor <= :adult))
              AND NOT EXISTS (SELECT 1 FROM notice_state n WHERE n.subject_id = s.subject_id
                              AND n.purpose = :p AND n.version = :v)
              AND NOT EXISTS (SELECT 1 FROM choice_state c WHERE c.subject_id = s.subject_id
                              AND c.purpose = :p
                              AND (c.action <> 'grant' OR c.notice_version IN :versions))
              {gpc}
            ORDER BY 4  -- in key order: the unique index is filled front to back (3x faster)
            ON CONFLICT (idempotency_key) DO NOTHING
            """
        ).bindparams(bindparam("places", expanding=True), bindparam("versions", expanding=True))
        result = conn.execute(
            statement,
            {
                "p": purpose,
                "v": terms.version,
                "pk": purpose,
                "vk": str(terms.version),
                "now": now,
                "places": places,
                "adult": f"until:{today}",
                "versions": sorted(p.grant_versions),
            },
        )
    return int(result.rowcount or 0)


# ---- the message ------------------------------------------------------------------------


def _words(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _categories(terms: notices.Terms) -> str:
    return _words([privacy.CATEGORY_WORDS.get(c, c) for c in terms.categories])


def _wrapped(paragraphs: Sequence[str], width: int = 76) -> str:
    """Paragraphs wrapped at spaces (never inside a word or a link): no line of the
    message comes near SMTP's limit of 998 characters, whatever the terms say."""
    return "\n".join(
        textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False) if p else ""
        for p in paragraphs
    )


def build_message(
    smtp: Smtp,
    to: str,
    terms: notices.Terms,
    starts: int,
    key: str,
    token: str,
    *,
    cte: str = "quoted-printable",
) -> EmailMessage:
    """The notice as an e-mail: plain text and HTML, what changes, what is used, by whom,
    from when, and a one-click "no" (RFC 8058 ``List-Unsubscribe-Post``). ``cte`` is the
    parts' transfer encoding (``8bit`` where the server takes 8BITMIME)."""
    link = f"{smtp.base_url}/one-click/{token}"
    settings = f"{smtp.base_url}/settings/data-privacy"
    day = privacy.day(starts)
    uses = _categories(terms)
    who = _words(list(terms.recipients))
    text = _wrapped(
        [
            f"We are changing how we use your data for “{terms.title}”.",
            "",
            f"What changes: {terms.changes}",
            "",
            f"What it uses: your {uses}.",
            f"Who gets it: {who}.",
            "",
            f"From {day}, your {uses} may be used for “{terms.title}” unless you say no. "
            "Saying no before then means it never starts; you can say no at any time.",
            "",
            f"Say no with one click: {link}",
            f"Or change your mind on your settings page: {settings}",
            "",
            terms.description,
        ]
    )
    e = html.escape
    rich = _wrapped(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(terms.title)}</title></head><body>",
            f"<p>We are changing how we use your data for “{e(terms.title)}”.</p>",
            f"<p><strong>What changes:</strong> {e(terms.changes)}</p>",
            f"<p><strong>What it uses:</strong> your {e(uses)}.<br>",
            f"<strong>Who gets it:</strong> {e(who)}.</p>",
            f"<p><strong>From {e(day)}</strong>, your {e(uses)} may be used for "
            f"“{e(terms.title)}” unless you say no. Saying no before then means it never "
            "starts; you can say no at any time.</p>",
            f'<p><a href="{e(link)}">Say no</a> (one click) ·',
            f'<a href="{e(settings)}">Your settings</a></p>',
            f"<p>{e(terms.description)}</p></body></html>",
        ]
    )
    msg = EmailMessage()
    msg["From"] = smtp.mail_from
    msg["To"] = to
    msg["Subject"] = f"{terms.title}: from {day}, unless you say no"
    msg["Date"] = format_datetime(times.now())
    msg["Message-ID"] = f"<{key}@{_domain(smtp.mail_from)}>"
    msg["List-Unsubscribe"] = f"<{link}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, cte=cte)
    msg.add_alternative(rich, subtype="html", cte=cte)
    return msg


class _Template:
    """One notice's message for everyone whose default would start on the same day, made
    once with :func:`build_message` (8bit parts) and serialised; each recipient's copy
    differs only in its address, Message-ID and one-click token, put in place as bytes.
    Building and serialising a MIME message with the email package costs milliseconds;
    this costs microseconds, so the server, not the message, sets the pace."""

    def __init__(self, smtp: Smtp, terms: notices.Terms, starts: int) -> None:
        mark = secrets.token_hex(8)
        self.to, self.key, self.token = f"to{mark}@askfirst.invalid", f"k{mark}", f"t{mark}"
        msg = build_message(smtp, self.to, terms, starts, self.key, self.token, cte="8bit")
        self.data = msg.as_bytes(policy=email.policy.SMTP)
        self.to_b, self.key_b, self.token_b = (
            self.to.encode(),
            self.key.encode(),
            self.token.encode(),
        )

    def render(self, to: str, key: str, token: str) -> bytes:
        return (
            self.data.replace(self.to_b, to.encode("ascii"))
            .replace(self.key_b, key.encode("ascii"))
            .replace(self.token_b, token.encode("ascii"))
        )


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "askfirst.invalid"


# ---- sending ------------------------------------------------------------------------------


@dataclass
class MailSent:
    """What a pass (or a run) over the mail queue did."""

    sent: int = 0
    failed: int = 0  # tries the server refused, or that could not reach it
    dropped: int = 0  # no longer owed: address gone, account closed, said no, told already
    pending: int = 0  # still owed after it
    next_due_in_s: float | None = None

    def add(self, other: MailSent) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.dropped += other.dropped
        self.pending, self.next_due_in_s = other.pending, other.next_due_in_s

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "pending": self.pending,
            "next_due_in_s": self.next_due_in_s,
        }


def _claim(ledger: Ledger, limit: int) -> tuple[int, list[Any]]:
    """Lease up to ``limit`` due rows, with what sending each needs; returns the lease
    (the ``next_attempt_at`` every claimed row now has) and the rows."""
    now = times.to_micros(times.now())
    lease = now + LEASE_US + secrets.randbelow(1000)  # this claim's own value
    due = (
        select(mail.c.id)
        .where(mail.c.sent_at.is_(None), mail.c.next_attempt_at <= now)
        .order_by(mail.c.next_attempt_at, mail.c.id)
        .limit(limit)
    )
    with store.write(ledger.engine) as conn:
        if store.is_postgres(ledger.engine):
            due = due.with_for_update(skip_locked=True)
        ids = list(conn.execute(due).scalars())
        if not ids:
            return lease, []
        conn.execute(
            update(mail)
            .where(mail.c.id.in_(ids), mail.c.sent_at.is_(None))
            .values(next_attempt_at=lease)
        )
        rows = conn.execute(
            select(
                mail,
                subjects.c.email,
                subject_state.c.status,
                subject_state.c.jurisdiction,
                choice_state.c.action,
                notice_state.c.seq.label("told_seq"),
            )
            .select_from(
                mail.outerjoin(subjects, subjects.c.id == mail.c.subject_id)
                .outerjoin(subject_state, subject_state.c.subject_id == mail.c.subject_id)
                .outerjoin(
                    choice_state,
                    (choice_state.c.subject_id == mail.c.subject_id)
                    & (choice_state.c.purpose == mail.c.purpose),
                )
                .outerjoin(
                    notice_state,
                    (notice_state.c.subject_id == mail.c.subject_id)
                    & (notice_state.c.purpose == mail.c.purpose)
                    & (notice_state.c.version == mail.c.version),
                )
            )
            .where(mail.c.id.in_(ids))
            .order_by(mail.c.id)
        ).all()
    return lease, list(rows)


def _not_owed(ledger: Ledger, row: Any) -> bool:
    """Whether a queued message is no longer owed: sent unsent, it would mislead."""
    purpose = ledger.policy.purposes.get(row.purpose)
    return (
        row.email is None  # erased, or the address was removed
        or row.status != "active"
        or str(ledger.policy.regime(row.jurisdiction)) != "opt-out"  # moved since
        or row.action in ("withdraw", "object")
        or row.told_seq is not None  # told already (in-app, or another channel)
        or purpose is None
        or purpose.version != row.version  # a newer version is what they must be told
        or purpose.default != "on"
    )


class _Connection:
    """One SMTP connection, opened at the first message and reused, with the messages
    made for it (a :class:`_Template` per notice and day, renewed every minute so that
    each message's Date stays true)."""

    def __init__(self, smtp: Smtp) -> None:
        self.smtp = smtp
        self.server: smtplib.SMTP | None = None
        self.eight_bit = False
        self.envelope_from = parseaddr(smtp.mail_from)[1]
        self.templates: dict[tuple[str, int, str], tuple[float, _Template]] = {}

    def send(self, to: str, terms: notices.Terms, starts: int, key: str, token: str) -> None:
        if self.server is None:
            self.server = self.smtp.connect()
            self.eight_bit = self.server.has_extn("8bitmime")
        if self.eight_bit and to.isascii():
            made = time.monotonic()
            slot = (terms.purpose, terms.version, privacy.day(starts))
            cached = self.templates.get(slot)
            if cached is None or made - cached[0] > 60:
                cached = self.templates[slot] = (made, _Template(self.smtp, terms, starts))
            data = cached[1].render(to, key, token)
            self.server.sendmail(self.envelope_from, [to], data, mail_options=["BODY=8BITMIME"])
            return
        # A server without 8BITMIME, or an address that needs SMTPUTF8: the email
        # package encodes the message (and the envelope) as this server needs.
        msg = build_message(self.smtp, to, terms, starts, key, token)
        self.server.send_message(msg, to_addrs=[to])

    def close(self) -> None:
        if self.server is not None:
            try:
                self.server.quit()
            except (smtplib.SMTPException, OSError):
                self.server.close()
            self.server = None

    def broken(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def _record(ledger: Ledger, lease: int, accepted: list[Any]) -> int:
    """Mark accepted messages sent and record their ``notice-delivered`` events, in one
    transaction; a row whose lease was lost (another worker took it over) records
    nothing here. Returns how many were recorded."""
    if not accepted:
        return 0
    now = times.to_micros(times.now())
    ours = (
        mail.c.id.in_([row.id for row in accepted]),
        mail.c.next_attempt_at == lease,
        mail.c.sent_at.is_(None),
    )
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)
        still = select(mail.c.id).where(*ours)
        if store.is_postgres(ledger.engine):
            still = still.with_for_update()
        held = set(conn.execute(still).scalars())
        conn.execute(
            update(mail)
            .where(mail.c.id.in_(sorted(held)))
            .values(sent_at=now, attempts=mail.c.attempts + 1, last_error=None)
        )
        mine = [row for row in accepted if row.id in held]
        ledger.append_in(
            conn,
            [
                NewEvent(
                    type=EventType.NOTICE,
                    subject=row.subject_id,
                    actor=SENDER,
                    source="mail",
                    purpose=row.purpose,
                    value=CHANNEL,
                    notice_version=row.version,
                )
                for row in mine
            ],
        )
    return len(mine)


def _fail(ledger: Ledger, lease: int, row: Any, problem: str, base_delay_s: float) -> None:
    now = times.to_micros(times.now())
    wait = backoff_s(row.attempts + 1, base_delay_s)
    with store.write(ledger.engine) as conn:
        conn.execute(
            update(mail)
            .where(mail.c.id == row.id, mail.c.next_attempt_at == lease)
            .values(
                attempts=row.attempts + 1,
                next_attempt_at=now + int(wait * times.MICROS),
                last_error=problem[:500],
            )
        )


def _release(ledger: Ledger, lease: int, rows: Sequence[Any]) -> None:
    """Give back claimed rows that were not tried: due again at once (they were due)."""
    if not rows:
        return
    now = times.to_micros(times.now())
    with store.write(ledger.engine) as conn:
        conn.execute(
            update(mail)
            .where(mail.c.id.in_([r.id for r in rows]), mail.c.next_attempt_at == lease)
            .values(next_attempt_at=now)
        )


def _drop(ledger: Ledger, lease: int, rows: Sequence[Any]) -> None:
    if not rows:
        return
    with store.write(ledger.engine) as conn:
        conn.execute(
            delete(mail).where(
                mail.c.id.in_([r.id for r in rows]),
                mail.c.next_attempt_at == lease,
                mail.c.sent_at.is_(None),
            )
        )


def _refusal(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, answer = next(iter(error.recipients.values()))
        return f"SMTP {code}: {answer.decode(errors='replace')}"
    if isinstance(error, smtplib.SMTPResponseException):
        said = error.smtp_error
        text_ = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
        return f"SMTP {error.smtp_code}: {text_}"
    return f"{type(error).__name__}: {error}"


def send_due(
    ledger: Ledger,
    smtp: Smtp,
    secret: str,
    *,
    limit: int = 500,
    deadline: float | None = None,
    base_delay_s: float = 60.0,
    connection: _Connection | None = None,
) -> MailSent:
    """Send the messages that are due, once each; schedule a retry for each refusal.

    ``secret`` signs the one-click links. With ``deadline`` (a ``time.monotonic()``
    reading) no message is sent after it; the rest are given back untried."""
    own = connection is None
    conn = connection or _Connection(smtp)
    done = MailSent()
    lease, claimed = _claim(ledger, limit)
    owed = [not _not_owed(ledger, r) for r in claimed]
    gone = [r for r, o in zip(claimed, owed, strict=True) if not o]
    _drop(ledger, lease, gone)
    done.dropped = len(gone)
    todo = [r for r, o in zip(claimed, owed, strict=True) if o]
    terms = {
        (p.terms.purpose, p.terms.version): p.terms
        for history in notices.published(ledger.engine).values()
        for p in history
    }
    accepted: list[Any] = []
    flushed = time.monotonic()
    try:
        for i, row in enumerate(todo):
            out_of_time = deadline is not None and time.monotonic() >= deadline
            # A slow server: give back what the lease no longer safely covers, so that no
            # other worker takes over a message this one is still sending.
            lease_ending = times.to_micros(times.now()) >= lease - LEASE_US // 4
            if out_of_time or lease_ending:
                _release(ledger, lease, todo[i:])
                break
            purpose = ledger.policy.purpose(row.purpose)
            starts = notices.default_starts(purpose, ledger.policy, times.to_micros(times.now()))
            token = make_token(secret, row.subject_id, row.purpose, row.version)
            about = terms[(row.purpose, row.version)]
            try:
                conn.send(row.email, about, starts, row.idempotency_key, token)
            except (
                smtplib.SMTPResponseException,
                smtplib.SMTPRecipientsRefused,
                smtplib.SMTPNotSupportedError,  # an address the server cannot take
            ) as error:
                # The server answered, and refused this message: tried again later.
                _fail(ledger, lease, row, _refusal(error), base_delay_s)
                done.failed += 1
                continue
            except OSError as error:  # smtplib's other errors too: the connection is gone
                conn.broken()
                _fail(ledger, lease, row, _refusal(error), base_delay_s)
                done.failed += 1
                _release(ledger, lease, todo[i + 1 :])  # the rest wait for the next pass
                break
            accepted.append(row)
            if len(accepted) >= FLUSH_EVERY or time.monotonic() - flushed >= FLUSH_AFTER_S:
                done.sent += _record(ledger, lease, accepted)
                accepted, flushed = [], time.monotonic()
    finally:
        done.sent += _record(ledger, lease, accepted)
        if own:
            conn.close()
    with ledger.engine.connect() as c:
        done.pending, first = c.execute(
            select(func.count(), func.min(mail.c.next_attempt_at)).where(mail.c.sent_at.is_(None))
        ).one()
    if first is not None:
        done.next_due_in_s = max(0.0, (first - times.to_micros(times.now())) / times.MICROS)
    return done


def run(
    ledger: Ledger,
    smtp: Smtp,
    secret: str,
    *,
    until_empty: bool = False,
    max_seconds: float | None = None,
    base_delay_s: float = 60.0,
    poll_s: float = 5.0,
    limit: int = 500,
) -> MailSent:
    """Keep sending over one SMTP connection: until nothing is owed (``until_empty``), or
    ``max_seconds`` pass, or for ever. Returns the totals."""
    total = MailSent()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    connection = _Connection(smtp)
    try:
        while True:
            sent = send_due(
                ledger,
                smtp,
                secret,
                limit=limit,
                deadline=deadline,
                base_delay_s=base_delay_s,
                connection=connection,
            )
            total.add(sent)
            if until_empty and sent.pending == 0:
                return total
            wait = poll_s if sent.next_due_in_s is None else min(poll_s, sent.next_due_in_s)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return total
                wait = min(wait, left)
            if (sent.sent or sent.dropped) and wait <= 0:
                continue  # more are due at once
            if connection.server is not None and wait > 1:
                connection.close()  # do not hold the server's connection while idle
            time.sleep(max(wait, 0.01))
    finally:
        connection.close()


def pending(ledger: Ledger) -> int:
    """How many e-mails are still owed."""
    with ledger.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(mail).where(mail.c.sent_at.is_(None))
            ).scalar()
            or 0
        )
