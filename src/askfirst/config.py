"""Settings: every knob askfirst reads from its environment, with its help text.

One list drives the CLI options, the README's settings table and a test that checks
each setting is documented there. :class:`WebSettings` is what the web app is built from
(``create_app(settings)``); the CLI fills it from these settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from askfirst.errors import InputError


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    option: str | None  # None: read from the environment only
    default: str | None
    help: str


DATABASE_URL = Setting(
    name="database_url",
    env="ASKFIRST_DATABASE_URL",
    option="--db",
    default="sqlite:///askfirst.db",
    help="The ledger's database: sqlite:///FILE (the embedded default, a file in the "
    "current folder) or postgresql://USER@HOST:PORT/DB.",
)
POLICY = Setting(
    name="policy",
    env="ASKFIRST_POLICY",
    option="--policy",
    default=None,
    help="The policy TOML file; when unset, askfirst's shipped policy (every purpose off "
    "by default, everywhere).",
)

KEY_DIR = Setting(
    name="key_dir",
    env="ASKFIRST_KEY_DIR",
    option="--key-dir",
    default="askfirst-keys",
    help="Folder for the receipt-signing Ed25519 key, the session secret, the secret that "
    "signs e-mails' one-click links and the names key (erased subjects' names are kept only "
    "as digests under it, and builds need it to find them), kept outside the database; made "
    "on first use.",
)
SECURE_COOKIES = Setting(
    name="secure_cookies",
    env="ASKFIRST_SECURE_COOKIES",
    option="--secure-cookies/--no-secure-cookies",
    default="true",
    help="Send the session cookie only over HTTPS (browsers also accept it from "
    "http://localhost and 127.0.0.1). Turn off only behind a TLS-terminating proxy "
    "that talks plain HTTP to askfirst on another host.",
)

SQLITE_SYNCHRONOUS = Setting(
    name="sqlite_synchronous",
    env="ASKFIRST_SQLITE_SYNCHRONOUS",
    option=None,
    default="NORMAL",
    help="SQLite's synchronous mode in WAL: NORMAL (an acknowledged event survives the "
    "process being killed; a power cut may lose the last few) or FULL (fsync on every "
    "commit: survives a power cut, several times slower). PostgreSQL always syncs.",
)

WEBHOOK_ALLOW_PRIVATE = Setting(
    name="webhook_allow_private",
    env="ASKFIRST_WEBHOOK_ALLOW_PRIVATE",
    option=None,
    default="0",
    help="Set to 1 to let partners' webhooks point at loopback, link-local, private "
    "(RFC 1918, fc00::/7, 100.64.0.0/10), unspecified or multicast addresses; refused by "
    "default, when a partner is added and again on every send.",
)

SESSION_LIFETIME = Setting(
    name="session_lifetime",
    env="ASKFIRST_SESSION_LIFETIME",
    option=None,
    default="28800",
    help="Seconds a sign-in session lasts in all (8 hours), however busy; then the member "
    "signs in again.",
)
SESSION_IDLE = Setting(
    name="session_idle",
    env="ASKFIRST_SESSION_IDLE",
    option=None,
    default="1800",
    help="Seconds a sign-in session lasts without a request (30 minutes).",
)


MAX_BODY_BYTES = Setting(
    name="max_body_bytes",
    env="ASKFIRST_MAX_BODY_BYTES",
    option=None,
    default="1048576",
    help="The largest request body the web app reads, in bytes (1 MiB); a larger one is "
    "answered 413 before it is parsed. Batch decisions may always send 4 MiB (10,000 ids); "
    "a receipt to verify at most 64 KiB.",
)
SIGNIN_ATTEMPTS = Setting(
    name="signin_attempts",
    env="ASKFIRST_SIGNIN_ATTEMPTS",
    option=None,
    default="5",
    help="Failed sign-ins allowed per account (the username as sign-in reads it) within "
    "5 minutes, from any address; then that account's sign-in answers 429 until they age.",
)
SIGNIN_ADDRESS_ATTEMPTS = Setting(
    name="signin_address_attempts",
    env="ASKFIRST_SIGNIN_ADDRESS_ATTEMPTS",
    option=None,
    default="20",
    help="Failed sign-ins allowed per client address, whatever the usernames, within "
    "5 minutes; then sign-in from that address answers 429 until they age.",
)
ANONYMOUS_REQUESTS = Setting(
    name="anonymous_requests",
    env="ASKFIRST_ANONYMOUS_REQUESTS",
    option=None,
    default="60",
    help="Requests per minute each client address may make to the API routes open without "
    "sign-in (POST /v1/receipts/verify); more are answered 429 with Retry-After.",
)

SMTP_URL = Setting(
    name="smtp_url",
    env="ASKFIRST_SMTP_URL",
    option=None,
    default=None,
    help="The SMTP server notices are mailed through: smtp://USER:PASS@HOST:587?starttls=1 "
    "(STARTTLS), smtps://USER:PASS@HOST:465 (implicit TLS) or smtp://HOST:25; add "
    "&cafile=FILE to trust a private CA. Unset: no mail is sent (it stays queued).",
)
MAIL_FROM = Setting(
    name="mail_from",
    env="ASKFIRST_MAIL_FROM",
    option=None,
    default=None,
    help="The From address of notices by e-mail, e.g. 'askfirst <privacy@example.com>'; "
    "its domain also names each message's Message-ID.",
)
BASE_URL = Setting(
    name="base_url",
    env="ASKFIRST_BASE_URL",
    option=None,
    default=None,
    help="The web app's public address, e.g. https://askfirst.example.com: the one-click "
    "'no' links and the settings links in e-mails point there.",
)
EVIDENCE_URL = Setting(
    name="evidence_url",
    env="ASKFIRST_EVIDENCE_URL",
    option=None,
    default=None,
    help="Where the evidence sent with cases (PDF, PNG or JPEG, at most 10 MB) is kept: "
    "file:///FOLDER, or an S3-compatible bucket as s3://BUCKET/PREFIX, adding "
    "?endpoint=http://HOST:PORT for one that is not AWS (pip install 'askfirst[s3]'; "
    "credentials from boto3's usual sources: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "~/.aws, an instance role). Unset: the folder askfirst-evidence beside the key folder.",
)


def number(setting: Setting) -> int:
    """A setting that counts something (bytes, attempts), from the environment or its default."""
    value = os.environ.get(setting.env, setting.default or "")
    if not value.strip().isdigit() or int(value) < 1:
        raise InputError(f"{setting.env}={value!r}: give a whole number of at least 1")
    return int(value)


SETTINGS: tuple[Setting, ...] = (
    DATABASE_URL,
    POLICY,
    KEY_DIR,
    SECURE_COOKIES,
    SQLITE_SYNCHRONOUS,
    SESSION_LIFETIME,
    SESSION_IDLE,
    WEBHOOK_ALLOW_PRIVATE,
    MAX_BODY_BYTES,
    SIGNIN_ATTEMPTS,
    SIGNIN_ADDRESS_ATTEMPTS,
    ANONYMOUS_REQUESTS,
    SMTP_URL,
    MAIL_FROM,
    BASE_URL,
    EVIDENCE_URL,
)


@dataclass(frozen=True)
class WebSettings:
    """What the web app needs; the CLI builds it from the settings above."""

    database_url: str
    key_dir: Path
    policy_path: Path | None = None
    secure_cookies: bool = True
    # failed sign-ins allowed per account, and per client address, within the window
    signin_attempts: int = field(default_factory=lambda: number(SIGNIN_ATTEMPTS))
    signin_address_attempts: int = field(default_factory=lambda: number(SIGNIN_ADDRESS_ATTEMPTS))
    signin_window_s: int = 300
    # requests per address to the API routes open without sign-in, within the window
    anonymous_requests: int = field(default_factory=lambda: number(ANONYMOUS_REQUESTS))
    anonymous_window_s: int = 60
    max_body_bytes: int = field(default_factory=lambda: number(MAX_BODY_BYTES))
    # a sign-in session ends this many seconds after sign-in, or after this many idle
    session_lifetime_s: int = field(default_factory=lambda: number(SESSION_LIFETIME))
    session_idle_s: int = field(default_factory=lambda: number(SESSION_IDLE))
    send_notices: bool = False  # send partners' notices from a thread (``askfirst serve``)
