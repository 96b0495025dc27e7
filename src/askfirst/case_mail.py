"""The mail a case sends: a link that confirms a requester's e-mail, and a representative's
one-time sign-in link.

Both go over the SMTP settings notices use (``askfirst.mail.Smtp``). The confirming link is
signed (``itsdangerous``) with a secret kept in the key folder, names only the case, and
expires; the sign-in link's secret is random and stored only as its SHA-256
(``askfirst.accounts.use_signin_link``), so a copy of the database cannot sign anyone in.
"""

from __future__ import annotations

import secrets
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

from askfirst.errors import InputError
from askfirst.mail import Smtp

LINK_FILE = "case-links.secret"
VERIFY_DAYS = 3
_SALT = "askfirst.case-verify"
KIND_WORDS = {
    "death": "a death reported",
    "representative": "a request to act for a member who died",
    "objection": "a request that names not be used",
    "erasure": "a request to be forgotten",
}


def link_secret(key_dir: Path) -> str:
    """The secret confirming links are signed with, made on first use (0600)."""
    path = Path(key_dir) / LINK_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def verify_token(secret: str, case_id: int, *, now: float | None = None) -> str:
    until = int(now if now is not None else time.time()) + VERIFY_DAYS * 86_400
    return str(URLSafeSerializer(secret, salt=_SALT).dumps([case_id, until]))


def read_verify_token(secret: str, token: str, *, now: float | None = None) -> int:
    """The case a confirming link is for; InputError when it is not ours or expired."""
    try:
        case_id, until = URLSafeSerializer(secret, salt=_SALT).loads(token)
        case_id, until = int(case_id), int(until)
    except (BadSignature, TypeError, ValueError):
        raise InputError(
            "this link is not one we sent, or it was changed on the way: copy the whole link "
            "from the e-mail"
        ) from None
    if (now if now is not None else time.time()) >= until:
        raise InputError(
            f"this link has expired (links work for {VERIFY_DAYS} days): send the request again"
        )
    return case_id


def _message(smtp: Smtp, to: str, subject: str, lines: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = smtp.mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=smtp.mail_from.rpartition("@")[2].strip("> ") or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("\n".join(lines) + "\n")
    return msg


def verification_message(smtp: Smtp, to: str, case_id: int, kind: str, token: str) -> EmailMessage:
    link = f"{smtp.base_url}/requests/confirm/{token}"
    return _message(
        smtp,
        to,
        f"Confirm your request ({KIND_WORDS.get(kind, kind)}, case {case_id})",
        [
            f"We received {KIND_WORDS.get(kind, kind)} (case {case_id}) with this address.",
            "Before anyone reviews it, please confirm that it was you, by opening this link:",
            "",
            link,
            "",
            f"The link works for {VERIFY_DAYS} days. If you did not send this request, ignore "
            "this e-mail: nothing will happen.",
        ],
    )


def signin_message(
    smtp: Smtp, to: str, case_id: int, subject_name: str, secret: str
) -> EmailMessage:
    link = f"{smtp.base_url}/signin/link/{secret}"
    return _message(
        smtp,
        to,
        f"You may now act for {subject_name} (case {case_id})",
        [
            f"Two of our reviewers approved your request to act for {subject_name} (case "
            f"{case_id}).",
            "Open this link to sign in. It works once, for 7 days:",
            "",
            link,
            "",
            "Once signed in you can say no to any use of their data, download their data, and "
            "close their account. Nobody can say yes on their behalf.",
        ],
    )


def send(smtp: Smtp, msg: EmailMessage) -> None:
    """Send one message now; OSError / smtplib errors reach the caller."""
    server = smtp.connect()
    try:
        server.send_message(msg)
    finally:
        try:
            server.quit()
        except OSError:
            server.close()
