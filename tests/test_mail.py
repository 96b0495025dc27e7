"""Notices by e-mail (issue 16), through a real SMTP server on this machine (aiosmtpd).

Who is owed a message (``queue_notices``); a server that refuses at first and then
accepts: each message delivered once and recorded once, refused mail records nothing;
two senders at once never send one message twice; STARTTLS with a login, and implicit
TLS, with a certificate made here; the message itself; the one-click "no" in the library.
Every test that touches the ledger runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import func, select, update

from askfirst import InputError, Ledger, NewEvent, SubjectIn, mail, notices, open_ledger
from askfirst.ledger.tables import events, one_click, subjects
from askfirst.ledger.tables import mail as mail_table
from askfirst.policy import parse_policy

POLICY = """
[purposes.feed-ai]
title = "Use my posts to train the feed's AI"
description = "Your posts help train the model that ranks your feed."
version = 1
categories = ["profile", "post"]
recipients = ["the platform"]
default = "on"
grace_days = 10

[purposes.research]
title = "Research by vetted partners"
version = 1
categories = ["post"]
recipients = ["vetted partners"]
default = "off"
grace_days = 30

[jurisdictions]
opt_out = ["US"]
"""
BASE = "https://askfirst.example.com"
SECRET = "one-click-test-secret"


def micros(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


# ---- a real SMTP server ---------------------------------------------------------------------


class Sink:
    """An SMTP server's handler that refuses the first ``refuse`` messages (451) and keeps
    the rest."""

    def __init__(self, refuse: int = 0, code: str = "451 4.3.0 Try again later") -> None:
        self.refuse = refuse
        self.code = code
        self.messages: list[EmailMessage] = []
        self.refused = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.refuse > 0:
                self.refuse -= 1
                self.refused += 1
                return self.code
            content = envelope.content
            if isinstance(content, str):  # a server that decodes (no 8BITMIME)
                content = content.encode("utf-8", "surrogateescape")
            msg = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            self.messages.append(msg)
        return "250 2.0.0 OK"

    def ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.messages]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield sink, controller.port
    controller.stop()


def smtp_for(port: int, **kw: Any) -> mail.Smtp:
    smtp = mail.Smtp.from_url(
        f"smtp://127.0.0.1:{port}", mail_from="askfirst <privacy@example.com>", base_url=BASE
    )
    return replace(smtp, **kw)


# ---- a ledger with subjects to tell ------------------------------------------------------


T0 = datetime.now(UTC) - timedelta(days=2)


@pytest.fixture
def led(db_url: str) -> Iterator[Ledger]:
    """feed-ai (default on in the US) and research (off by default) published; members in
    the US with and without an address, in Germany, closed, a minor, one who said no."""
    with open_ledger(db_url, parse_policy(POLICY, "mail.toml"), create=True) as ledger:
        for name in ("feed-ai", "research"):
            notices.publish(
                ledger, ledger.policy, name, changes="First version.", actor="staff:pat",
                at=micros(T0),
            )  # fmt: skip
        ledger.register(
            [
                SubjectIn(id="us1", jurisdiction="US", email="us1@example.com"),
                SubjectIn(id="us2", jurisdiction="US-CA", email="us2@example.com"),
                SubjectIn(id="us-noaddr", jurisdiction="US"),
                SubjectIn(id="de1", jurisdiction="DE", email="de1@example.com"),
                SubjectIn(id="closed1", jurisdiction="US", email="c@example.com", status="closed"),
                SubjectIn(id="kid1", jurisdiction="US", email="kid@example.com", minor=True),
                SubjectIn(id="no1", jurisdiction="US", email="no1@example.com"),
            ],
            since=T0 + timedelta(hours=1),
        )
        ledger.append(
            NewEvent(
                type="choice", subject="no1", actor="no1", source="web", purpose="feed-ai",
                value="withdraw",
            )
        )  # fmt: skip
        yield ledger


def queued(ledger: Ledger) -> list[str]:
    with ledger.engine.connect() as conn:
        return sorted(conn.execute(select(mail_table.c.subject_id)).scalars())


def delivered(ledger: Ledger) -> list[tuple[str, str | None, str]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.subject_id, events.c.value, events.c.actor).where(
                events.c.type == "notice-delivered"
            )
        ).all()
    return sorted((r[0], r[1], r[2]) for r in rows)


def test_the_email_is_kept_in_the_directory_not_in_the_chain(led: Ledger) -> None:
    with led.engine.connect() as conn:
        assert conn.execute(select(subjects.c.email).where(subjects.c.id == "us1")).scalar() == (
            "us1@example.com"
        )
        values = conn.execute(select(events.c.value, events.c.subject_id)).all()
    assert not any("example.com" in (v or "") for v, _ in values)


def test_a_bad_address_is_refused_on_import() -> None:
    with pytest.raises(ValueError, match="email"):
        SubjectIn(id="x", email="not an address")


def test_queue_tells_only_those_a_default_could_reach(led: Ledger) -> None:
    assert mail.queue_notices(led, "feed-ai") == 2
    assert queued(led) == ["us1", "us2"]  # US and a US state; not DE, closed, minor, no
    with led.engine.connect() as conn:
        keys = dict(
            conn.execute(select(mail_table.c.subject_id, mail_table.c.idempotency_key)).all()
        )
    assert keys["us1"] == mail.mail_key("us1", "feed-ai", 1)  # the same in SQL as in Python
    assert mail.queue_notices(led, "feed-ai") == 0  # twice adds nothing
    assert queued(led) == ["us1", "us2"]


def test_queue_skips_those_told_already_and_nobody_when_off_by_default(led: Ledger) -> None:
    led.append(
        NewEvent(
            type="notice-delivered", subject="us1", actor="system:web", source="web",
            purpose="feed-ai", value="in-app", notice_version=1,
        )
    )  # fmt: skip
    assert mail.queue_notices(led, "feed-ai") == 1
    assert queued(led) == ["us2"]
    assert mail.queue_notices(led, "research") == 0
    why = mail.why_nobody(led, "research")
    assert why is not None and "off by default" in why


def test_queue_refuses_a_version_that_was_never_published(db_url: str) -> None:
    policy = parse_policy(POLICY, "mail.toml")
    with (
        open_ledger(db_url, policy, create=True) as ledger,
        pytest.raises(InputError, match="has not been published"),
    ):
        mail.queue_notices(ledger, "feed-ai")


# ---- sending -----------------------------------------------------------------------------


def test_refused_mail_records_nothing_then_each_is_sent_and_recorded_once(
    led: Ledger, server: tuple[Sink, int]
) -> None:
    sink, port = server
    sink.refuse = 2
    mail.queue_notices(led, "feed-ai")
    first = mail.send_due(led, smtp_for(port), SECRET, base_delay_s=0.01)
    assert (first.sent, first.failed) == (0, 2)
    assert delivered(led) == []  # refused: nothing recorded
    with led.engine.connect() as conn:
        rows = conn.execute(select(mail_table.c.attempts, mail_table.c.last_error)).all()
    assert all(a == 1 and e is not None and e.startswith("SMTP 451") for a, e in rows)

    total = mail.run(
        led, smtp_for(port), SECRET, until_empty=True, max_seconds=60, base_delay_s=0.01
    )
    assert total.pending == 0
    assert sorted(sink.ids()) == sorted(
        f"<{mail.mail_key(s, 'feed-ai', 1)}@example.com>" for s in ("us1", "us2")
    )
    assert delivered(led) == [("us1", "email", "system:mail"), ("us2", "email", "system:mail")]
    # Nothing is sent or recorded again.
    mail.queue_notices(led, "feed-ai")
    again = mail.run(led, smtp_for(port), SECRET, until_empty=True, max_seconds=10)
    assert (again.sent, len(sink.messages), len(delivered(led))) == (0, 2, 2)


def test_the_message_says_what_changes_from_when_and_carries_a_one_click_no(
    led: Ledger, server: tuple[Sink, int]
) -> None:
    sink, port = server
    mail.queue_notices(led, "feed-ai")
    mail.run(led, smtp_for(port), SECRET, until_empty=True, max_seconds=60)
    msg = next(m for m in sink.messages if m["To"] == "us1@example.com")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(msg["List-Unsubscribe"]).strip("<>")
    assert link.startswith(f"{BASE}/one-click/")
    token = link.rsplit("/", 1)[1]
    assert mail.read_token(SECRET, token) == mail.Link(
        "us1", "feed-ai", 1, mail.read_token(SECRET, token).expires
    )
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    text = " ".join(plain.get_content().split())  # lines are wrapped at spaces
    # The default could start 10 days after being told, not before the published date.
    starts = max(
        datetime.now(UTC) + timedelta(days=10),
        datetime.combine(T0.date() + timedelta(days=11), dt.time(), UTC),
    )
    day = f"{starts.day} {starts:%b %Y}"
    for words in (
        "Use my posts to train the feed's AI",
        "First version.",
        "your profile and posts",
        "the platform",
        f"From {day}",
        link,
    ):
        assert words in text, words
    assert "First version." in rich.get_content() and link in rich.get_content()
    assert msg["From"] == "askfirst <privacy@example.com>"
    assert (
        str(msg["Subject"]).strip()
        == f"Use my posts to train the feed's AI: from {day}, unless you say no"
    )


def test_long_terms_never_make_a_line_too_long_for_smtp() -> None:
    terms = notices.Terms(
        purpose="feed-ai", version=1, title="T", description="D " * 300,
        changes="word " * 399, categories=("post",), recipients=("the platform",),
        default="on", grace_days=10, places=("US",), earliest_default=None,
    )  # fmt: skip
    smtp = smtp_for(25)
    token = mail.make_token(SECRET, "s" * 200, "feed-ai", 1)
    for cte in ("8bit", "quoted-printable"):
        msg = mail.build_message(smtp, "a@example.com", terms, 0, "k" * 64, token, cte=cte)
        data = msg.as_bytes(policy=email.policy.SMTP)
        assert max(len(line) for line in data.split(b"\r\n")) < 998
        assert f"{BASE}/one-click/{token}".encode() in data or cte != "8bit"


def test_those_no_longer_owed_are_dropped_unsent(led: Ledger, server: tuple[Sink, int]) -> None:
    sink, port = server
    led.register([SubjectIn(id="mover", jurisdiction="US", email="mover@example.com")])
    assert mail.queue_notices(led, "feed-ai") == 3
    led.append(
        NewEvent(type="jurisdiction", subject="mover", actor="system", source="import", value="DE")
    )
    led.append(
        NewEvent(
            type="choice", subject="us1", actor="us1", source="web", purpose="feed-ai",
            value="withdraw",
        )
    )  # fmt: skip
    with led.engine.begin() as conn:  # us2's address erased
        conn.execute(update(subjects).where(subjects.c.id == "us2").values(email=None))
    done = mail.run(led, smtp_for(port), SECRET, until_empty=True, max_seconds=30)
    assert (done.sent, done.dropped, done.pending) == (0, 3, 0)
    assert sink.messages == [] and delivered(led) == []


def test_two_senders_at_once_never_send_one_message_twice(
    led: Ledger, server: tuple[Sink, int]
) -> None:
    sink, port = server
    led.register(
        [SubjectIn(id=f"m{i:03}", jurisdiction="US", email=f"m{i}@example.com") for i in range(60)]
    )
    assert mail.queue_notices(led, "feed-ai") == 62
    results: list[mail.MailSent] = []

    def sender() -> None:
        results.append(
            mail.run(
                led, smtp_for(port), SECRET, until_empty=True, max_seconds=60, limit=5, poll_s=0.1
            )
        )

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sink.ids()
    assert len(ids) == len(set(ids)) == 62
    assert sum(r.sent for r in results) == 62
    assert len(delivered(led)) == 62
    with led.engine.connect() as conn:
        assert (
            conn.execute(select(func.count()).where(mail_table.c.sent_at.is_(None))).scalar() == 0
        )


# ---- TLS ---------------------------------------------------------------------------------


def _certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_starttls_with_a_login_and_implicit_tls(led: Ledger, tmp_path: Path, security: str) -> None:
    cert, key = _certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
        logins.append((auth.login, auth.password))
        return AuthResult(success=auth.password == b"s3cret")

    sink = Sink()
    port = free_port()
    options: dict[str, Any] = (
        {"tls_context": server_ctx, "require_starttls": True}
        if security == "starttls"
        else {"ssl_context": server_ctx}
    )
    # aiosmtpd offers AUTH only after STARTTLS when it requires TLS for it: it does not
    # count implicit TLS, so over implicit TLS it is told not to require it.
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, authenticator=authenticator,
        auth_require_tls=security == "starttls", auth_required=True, **options,
    )  # fmt: skip
    controller.start()
    try:
        scheme = "smtp" if security == "starttls" else "smtps"
        query = "?starttls=1" if security == "starttls" else ""
        smtp = mail.Smtp.from_url(
            f"{scheme}://mailer:s3cret@127.0.0.1:{port}{query}",
            mail_from="privacy@example.com",
            base_url=BASE,
        )
        assert smtp.security == security
        smtp = replace(smtp, context=ssl.create_default_context(cafile=str(cert)))
        mail.queue_notices(led, "feed-ai")
        done = mail.run(led, smtp, SECRET, until_empty=True, max_seconds=60)
    finally:
        controller.stop()
    assert done.sent == 2 and len(sink.messages) == 2
    assert logins and logins[0] == (b"mailer", b"s3cret")


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@host:25",
        "smtp://",
        "smtp://user:hunter2@host:notaport",
        "smtp://user:hunter2@host:587?starttls=maybe",
        "smtp://user:hunter2@host:587?tls=1",
    ],
)
def test_a_bad_smtp_url_is_one_clear_line_without_the_password(url: str) -> None:
    with pytest.raises(InputError) as e:
        mail.Smtp.from_url(url, mail_from="a@example.com", base_url=BASE)
    message = str(e.value)
    assert "\n" not in message and "ASKFIRST_SMTP_URL" in message
    assert "hunter2" not in message


def test_smtp_urls_read_as_they_say() -> None:
    s = mail.Smtp.from_url(
        "smtp://us%40er:p%3Ass@mail.example.com?starttls=1", mail_from="a@example.com",
        base_url=BASE + "/",
    )  # fmt: skip
    assert (s.host, s.port, s.security, s.username, s.password) == (
        "mail.example.com", 587, "starttls", "us@er", "p:ss",
    )  # fmt: skip
    assert s.base_url == BASE
    assert mail.Smtp.from_url("smtps://h", mail_from="a@b.c", base_url=BASE).port == 465
    with pytest.raises(InputError, match="ASKFIRST_MAIL_FROM"):
        mail.Smtp.from_url("smtp://h", mail_from="", base_url=BASE)
    with pytest.raises(InputError, match="ASKFIRST_BASE_URL"):
        mail.Smtp.from_url("smtp://h", mail_from="a@b.c", base_url="askfirst.example.com")


# ---- the one-click "no" in the library ---------------------------------------------------


def _choices(ledger: Ledger, subject: str) -> list[tuple[str | None, str, str]]:
    return [
        (e.value, e.actor, e.source) for e in ledger.subject_events(subject) if e.type == "choice"
    ]


def _used(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(one_click)).scalar() or 0)


def test_a_one_click_link_says_no_once(led: Ledger) -> None:
    token = mail.make_token(SECRET, "us1", "feed-ai", 1)
    choice = mail.say_no(led, SECRET, token)
    assert choice.changed and choice.event.value == "withdraw"
    assert _choices(led, "us1") == [("withdraw", "us1", "one-click")]
    with led.engine.connect() as conn:
        assert conn.execute(select(one_click.c.seq)).scalar() == choice.event.seq
    head = led.head()
    with pytest.raises(mail.LinkRefused) as e:
        mail.say_no(led, SECRET, token)
    assert e.value.why == "used"
    assert led.head() == head and _used(led) == 1


def test_expired_and_tampered_links_write_nothing(led: Ledger) -> None:
    head = led.head()
    expired = mail.make_token(SECRET, "us1", "feed-ai", 1, expires=1)
    with pytest.raises(mail.LinkRefused) as e:
        mail.say_no(led, SECRET, expired)
    assert e.value.why == "expired"
    good = mail.make_token(SECRET, "us1", "feed-ai", 1)
    for bad in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"), good + "x", "junk",
                mail.make_token("another secret", "us1", "feed-ai", 1)):  # fmt: skip
        with pytest.raises(mail.LinkRefused) as e:
            mail.say_no(led, SECRET, bad)
        assert e.value.why == "tampered"
    assert led.head() == head and _used(led) == 0


def test_a_link_for_someone_who_already_said_no_records_nothing_new(led: Ledger) -> None:
    before = _choices(led, "no1")
    choice = mail.say_no(led, SECRET, mail.make_token(SECRET, "no1", "feed-ai", 1))
    assert not choice.changed and _choices(led, "no1") == before
    assert _used(led) == 1  # but the link is spent


def test_subjects_import_takes_an_email_and_names_a_bad_one(db_url: str, tmp_path: Path) -> None:
    from askfirst.ledger.imports import import_subjects

    with open_ledger(db_url, parse_policy(POLICY, "mail.toml"), create=True) as ledger:
        good = tmp_path / "good.jsonl"
        good.write_text('{"id": "a1", "jurisdiction": "US", "email": "a1@example.com"}\n')
        import_subjects(ledger, good)
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"id": "a2"}\n{"id": "a3", "email": "a3 at example"}\n')
        with pytest.raises(InputError, match=r"line 2.*email"):
            import_subjects(ledger, bad)
        with ledger.engine.connect() as conn:
            rows = conn.execute(select(subjects.c.id, subjects.c.email)).all()
    assert [tuple(r) for r in rows] == [("a1", "a1@example.com")]


# ---- the commands -----------------------------------------------------------------------


def test_notice_send_queues_and_outbox_run_sends_beside_the_webhooks(
    tmp_path: Path, server: tuple[Sink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from test_gate import ok, one_line_error, run

    sink, port = server
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    people = tmp_path / "people.jsonl"
    people.write_text(
        '{"id": "p1", "jurisdiction": "US", "email": "p1@example.com"}\n'
        '{"id": "p2", "jurisdiction": "US", "email": "p2@example.com"}\n'
        '{"id": "p3", "jurisdiction": "DE", "email": "p3@example.com"}\n'
    )
    common = ["--db", db, "--policy", policy]
    ok(run("init", "--db", db))
    one_line_error(run("notice", "send", "feed-ai", *common), "not been published")
    ok(run("notice", "publish", "feed-ai", "--changes", "First version.", *common))
    ok(run("notice", "publish", "research", "--changes", "First version.", *common))
    ok(run("subjects", "import", people, *common))
    assert "queued 2 e-mail(s) of feed-ai" in ok(run("notice", "send", "feed-ai", *common))
    said = json.loads(ok(run("notice", "send", "feed-ai", *common, "--json")))
    assert (said["queued"], said["pending"]) == (0, 2)
    assert "off by default" in ok(run("notice", "send", "research", *common))

    # Without SMTP settings the mail waits, and says why.
    out = ok(run("outbox", "run", "--until-empty", *common))
    assert out.splitlines() == [
        "delivered 0, failed tries 0, still owed 0",
        "mail: 2 e-mail(s) queued, not sent: set ASKFIRST_SMTP_URL (and ASKFIRST_MAIL_FROM, "
        "ASKFIRST_BASE_URL)",
    ]
    monkeypatch.setenv("ASKFIRST_SMTP_URL", "smtp://127.0.0.1:notaport")
    one_line_error(run("outbox", "run", *common), "ASKFIRST_SMTP_URL")
    monkeypatch.setenv("ASKFIRST_SMTP_URL", f"smtp://127.0.0.1:{port}")
    monkeypatch.setenv("ASKFIRST_MAIL_FROM", "privacy@example.com")
    monkeypatch.setenv("ASKFIRST_BASE_URL", BASE)
    keys = tmp_path / "keys"
    out = ok(
        run("outbox", "run", "--until-empty", "--max-seconds", "60", "--key-dir", keys, *common)
    )
    assert out.splitlines() == [
        "delivered 0, failed tries 0, still owed 0",
        "mail: sent 2, failed tries 0, dropped 0 (no longer owed), still owed 0",
    ]
    assert sorted(str(m["To"]) for m in sink.messages) == ["p1@example.com", "p2@example.com"]
    assert (keys / mail.ONE_CLICK_FILE).exists()
    again = json.loads(
        ok(run("outbox", "run", "--until-empty", "--key-dir", keys, *common, "--json"))
    )
    assert again["mail"] == {
        "sent": 0, "failed": 0, "dropped": 0, "pending": 0, "next_due_in_s": None,
    }  # fmt: skip
    assert again["delivered"] == 0


@pytest.mark.parametrize("without_8bitmime", [False, True])
def test_a_server_without_8bitmime_and_an_address_that_needs_smtputf8(
    led: Ledger, without_8bitmime: bool
) -> None:
    led.register([SubjectIn(id="jose", jurisdiction="US", email="josé@example.com")])
    sink = Sink()
    controller = Controller(
        sink, hostname="127.0.0.1", port=free_port(), decode_data=without_8bitmime,
        enable_SMTPUTF8=not without_8bitmime,
    )  # fmt: skip
    controller.start()
    try:
        mail.queue_notices(led, "feed-ai")
        with led.engine.begin() as c:  # the unicode address is tried first
            c.execute(
                update(mail_table)
                .where(mail_table.c.subject_id == "jose")
                .values(next_attempt_at=0)
            )
        done = mail.send_due(led, smtp_for(controller.port), SECRET)
    finally:
        controller.stop()
    to = sorted(str(m["To"]) for m in sink.messages)
    if without_8bitmime:  # the server cannot take the unicode address: refused, retried
        assert to == ["us1@example.com", "us2@example.com"] and done.pending == 1
    else:
        assert to == ["josé@example.com", "us1@example.com", "us2@example.com"]
    for m in sink.messages:
        plain = m.get_body(("plain",))
        assert plain is not None and "“Use my posts" in plain.get_content()


def test_the_server_sends_mail_from_a_thread_when_asked(
    led: Ledger, server: tuple[Sink, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    import warnings

    from starlette.exceptions import StarletteDeprecationWarning

    with warnings.catch_warnings():  # as tests/web/conftest.py: httpx is what we ship
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient

    from askfirst.web.app import WebSettings, create_app

    sink, port = server
    monkeypatch.setenv("ASKFIRST_SMTP_URL", f"smtp://127.0.0.1:{port}")
    monkeypatch.setenv("ASKFIRST_MAIL_FROM", "privacy@example.com")
    monkeypatch.setenv("ASKFIRST_BASE_URL", BASE)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    mail.queue_notices(led, "feed-ai")
    quiet = create_app(WebSettings(led.url, tmp_path / "keys", policy))  # as in tests: off
    with TestClient(quiet):
        time.sleep(0.5)
    assert sink.messages == []
    app = create_app(WebSettings(led.url, tmp_path / "keys", policy, send_notices=True))
    with TestClient(app):
        deadline = time.monotonic() + 30
        while len(delivered(led)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(sink.messages) == 2
    assert [d[:2] for d in delivered(led)] == [("us1", "email"), ("us2", "email")]
