"""The web layer's commands: staff/accounts/tokens, receipt verify and ``askfirst demo``.

In-process through Typer's CliRunner on SQLite, except one test that starts the real
``askfirst demo`` command and asks its web server for a page. Every failure a user can
cause ends with exit 1 and one "error:" line on stderr, never a traceback.

The demo takes seconds to build: it is built once per module (through the command, as a
newcomer would) and copied for the tests that run it again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from askfirst import Ledger, NewEvent, SubjectIn, load_policy, open_ledger, receipts
from askfirst.accounts import authenticate, token_for
from askfirst.cli import app
from askfirst.decisions import decide_many
from askfirst.ledger.tables import accounts, api_tokens, authority_state, subject_state

ANSI = re.compile(r"\x1b\[[0-9;]*m")
CORPUS_CATEGORIES = {"profile", "post", "comment", "article", "video", "message", "security"}


def run(*args: str, input: str | None = None) -> Result:
    """``askfirst ARGS`` in-process, with askfirst's environment cleared."""
    env: dict[str, str | None] = {
        "ASKFIRST_DATABASE_URL": None,
        "ASKFIRST_POLICY": None,
        "ASKFIRST_KEY_DIR": None,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return CliRunner().invoke(app, list(args), input=input, env=env)


def ok(res: Result) -> str:
    assert res.exit_code == 0, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert "Traceback" not in res.output
    return ANSI.sub("", res.stdout)


def one_line_error(res: Result, *needles: str) -> str:
    """A clean failure: exit 1, one 'error:' line on stderr, no traceback."""
    assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite ledger made by ``askfirst init``, with two members."""
    url = f"sqlite:///{tmp_path / 'askfirst.db'}"
    ok(run("init", "--db", url))
    with open_ledger(url, load_policy()) as ledger:
        ledger.register(
            [
                SubjectIn(id="m1", jurisdiction="DE", handle="anna"),
                SubjectIn(id="m2", jurisdiction="US-CA", handle="jo"),
            ]
        )
    return url


def database_bytes(url: str) -> bytes:
    """Every byte SQLite keeps for this database (the file and its WAL/journal)."""
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


# ---- staff, accounts and tokens --------------------------------------------------------


def test_staff_create_reads_the_password_from_stdin(db: str) -> None:
    out = ok(
        run(
            "staff",
            "create",
            "Alex",
            "--role",
            "admin",
            "--password-stdin",
            "--db",
            db,
            input="s3cret-pass\n",
        )
    )
    assert "'alex'" in out and "created" in out
    assert "s3cret-pass" not in out
    with open_ledger(db) as ledger:
        account = authenticate(ledger, "alex", "s3cret-pass")
        assert account is not None
        assert (account.kind, account.subject_id) == ("staff", None)
    assert b"s3cret-pass" not in database_bytes(db)


def test_accounts_create_makes_a_member_account(db: str) -> None:
    out = ok(
        run(
            "accounts", "create", "anna", "--subject", "m1", "--password-stdin", "--db", db,
            input="anna-pass-1\n",
        )
    )  # fmt: skip
    assert "'anna'" in out and "m1" in out
    with open_ledger(db) as ledger:
        account = authenticate(ledger, "anna", "anna-pass-1")
    assert account is not None
    assert (account.kind, account.subject_id) == ("member", "m1")


def test_a_short_or_taken_password_account_is_an_error(db: str) -> None:
    one_line_error(
        run(
            "staff",
            "create",
            "alex",
            "--role",
            "admin",
            "--password-stdin",
            "--db",
            db,
            input="short\n",
        ),
        "at least 8 characters",
    )
    ok(
        run(
            "staff",
            "create",
            "alex",
            "--role",
            "admin",
            "--password-stdin",
            "--db",
            db,
            input="long-enough\n",
        )
    )
    one_line_error(
        run(
            "staff",
            "create",
            "ALEX",
            "--role",
            "admin",
            "--password-stdin",
            "--db",
            db,
            input="long-enough\n",
        ),
        "already taken",
    )


def test_tokens_create_prints_the_secret_once_and_stores_only_its_hash(db: str) -> None:
    res = run("tokens", "create", "search-indexer", "--scope", "decisions:read", "--db", db)
    out = ok(res)
    lines = out.splitlines()
    assert len(lines) == 1, out
    secret = lines[0]
    assert re.fullmatch(r"afk_[A-Za-z0-9_-]{40,}", secret), secret
    assert "search-indexer" in res.stderr and secret not in res.stderr

    assert secret.encode() not in database_bytes(db)
    assert secret.removeprefix("afk_").encode() not in database_bytes(db)
    with open_ledger(db) as ledger:
        with ledger.engine.connect() as conn:
            [row] = conn.execute(sa.select(api_tokens)).all()
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        token = token_for(ledger, secret)
    assert token is not None
    assert (token.name, token.scopes, token.subject_id) == (
        "search-indexer",
        frozenset({"decisions:read"}),
        None,
    )

    ok(run("tokens", "revoke", "search-indexer", "--db", db))
    with open_ledger(db) as ledger:
        assert token_for(ledger, secret) is None
    one_line_error(run("tokens", "revoke", "search-indexer", "--db", db), "search-indexer")


def test_tokens_create_with_several_scopes_and_a_subject(db: str) -> None:
    res = run(
        "tokens", "create", "anna-app", "--scope", "choices:write", "--scope", "decisions:read",
        "--subject", "m1", "--db", db,
    )  # fmt: skip
    secret = ok(res).strip()
    with open_ledger(db) as ledger:
        token = token_for(ledger, secret)
    assert token is not None
    assert token.scopes == frozenset({"choices:write", "decisions:read"})
    assert token.subject_id == "m1"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("tokens", "create", "t", "--scope", "root"), "unknown scope 'root'"),
        (("tokens", "create", "t", "--scope", "choices:write"), "--subject"),
        (
            ("tokens", "create", "t", "--scope", "choices:write", "--subject", "m9"),
            "unknown subject 'm9'",
        ),
        (("tokens", "revoke", "never-made"), "never-made"),
        (("accounts", "create", "ghost", "--subject", "m9", "--password-stdin"), "'m9'"),
    ],
    ids=["unknown-scope", "choices-write-for-all", "token-subject", "revoke", "account-subject"],
)
def test_bad_inputs_are_one_error_line(db: str, args: tuple[str, ...], needle: str) -> None:
    one_line_error(run(*args, "--db", db, input="ghost-password\n"), needle)
    with open_ledger(db) as ledger, ledger.engine.connect() as conn:
        assert conn.execute(sa.select(api_tokens)).all() == []
        assert conn.execute(sa.select(accounts)).all() == []


def test_commands_on_a_missing_database_fail_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nothing-here.db'}"
    one_line_error(run("tokens", "create", "t", "--scope", "admin", "--db", url), "no ledger")
    assert not (tmp_path / "nothing-here.db").exists()


# ---- receipt verify ---------------------------------------------------------------------


@pytest.fixture
def receipt_file(db: str, tmp_path: Path) -> tuple[Path, Path]:
    """m1's grant, its receipt as a downloaded file, and the service's key folder."""
    key_dir = tmp_path / "keys"
    with open_ledger(db) as ledger:
        key = receipts.signing_key(ledger, key_dir)  # made, and recorded in the ledger
        ev = ledger.append(
            NewEvent(
                type="choice",
                subject="m1",
                actor="m1",
                source="test",
                purpose="genai-training",
                value="grant",
            )
        )
        receipt = receipts.build(ledger, ev, key, withdraw_url="http://127.0.0.1/settings")
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt, indent=2, ensure_ascii=False), "utf-8")
    return path, key_dir


def test_receipt_verify_accepts_a_good_receipt(db: str, receipt_file: tuple[Path, Path]) -> None:
    path, key_dir = receipt_file
    out = ok(run("receipt", "verify", str(path), "--key-dir", str(key_dir)))
    assert out.startswith("valid: m1 consent given for genai-training"), out
    out = ok(run("receipt", "verify", str(path), "--db", db))
    assert out.startswith("valid:") and "the ledger agrees" in out
    out = ok(run("receipt", "verify", str(path), "--key-dir", str(key_dir), "--db", db))
    assert out.startswith("valid:") and "the ledger agrees" in out


def test_receipt_verify_with_nothing_to_trust_says_so(receipt_file: tuple[Path, Path]) -> None:
    path, _ = receipt_file
    one_line_error(
        run("receipt", "verify", str(path)),
        "nothing says which keys are the service's",
        "--keys-url",
        "/.well-known/askfirst-receipt-keys.json",
    )


def test_receipt_verify_refuses_a_tampered_receipt(receipt_file: tuple[Path, Path]) -> None:
    path, _ = receipt_file
    data = json.loads(path.read_text("utf-8"))
    data["event"]["eventState"] = "consent withdrawn"
    path.write_text(json.dumps(data), "utf-8")
    one_line_error(
        run("receipt", "verify", str(path), "--key-dir", str(receipt_file[1])),
        "signature does not match",
    )


def test_receipt_verify_refuses_another_key_and_a_rewritten_ledger(
    db: str, receipt_file: tuple[Path, Path], tmp_path: Path
) -> None:
    path, key_dir = receipt_file
    other = tmp_path / "other-keys"
    receipts.ReceiptKey.load(other)
    one_line_error(
        run("receipt", "verify", str(path), "--key-dir", str(other)),
        f"which the key folder {other} does not know",
    )

    data = json.loads(path.read_text("utf-8"))
    with open_ledger(db) as ledger, ledger.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE events SET hash = :h WHERE seq = :s"),
            {"h": "0" * 64, "s": data["ledger"]["eventSeq"]},
        )
    res = run("receipt", "verify", str(path), "--key-dir", str(key_dir), "--db", db)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert all(line.startswith("error: ") for line in res.stderr.splitlines())
    assert "rewritten or cut" in res.stderr


def _resign(path: Path, key_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Alter the receipt in ``path`` and sign it again with the key in ``key_dir``."""
    data = json.loads(path.read_text("utf-8"))
    change(data)
    key = receipts.ReceiptKey.load(key_dir)
    data["signature"]["keyId"], data["signature"]["publicKey"] = key.key_id, key.public_b64
    data["signature"]["value"] = (
        base64.urlsafe_b64encode(key.private.sign(receipts.canonical(data))).rstrip(b"=").decode()
    )
    path.write_text(json.dumps(data), "utf-8")


def _withdrawn(data: dict[str, Any]) -> None:
    data["event"]["eventState"] = "consent withdrawn"
    data["event"]["dpv:hasConsentStatus"] = "dpv:ConsentWithdrawn"


def test_receipt_verify_refuses_a_receipt_re_signed_with_a_key_of_ones_own(
    db: str, receipt_file: tuple[Path, Path], tmp_path: Path
) -> None:
    path, key_dir = receipt_file
    _resign(path, tmp_path / "forger", _withdrawn)
    for anchor in (("--db", db), ("--key-dir", str(key_dir))):
        res = run("receipt", "verify", str(path), *anchor)
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert "not a key of this service" in res.stderr.splitlines()[0], res.stderr


def test_receipt_verify_refuses_a_receipt_re_signed_with_the_service_key(
    db: str, receipt_file: tuple[Path, Path]
) -> None:
    """Whoever holds the service's key can sign a withdrawal as a grant; the ledger says
    what was chosen."""
    path, key_dir = receipt_file
    seq = json.loads(path.read_text("utf-8"))["ledger"]["eventSeq"]
    _resign(path, key_dir, _withdrawn)
    ok(run("receipt", "verify", str(path), "--key-dir", str(key_dir)))  # the key is genuine
    one_line_error(
        run("receipt", "verify", str(path), "--key-dir", str(key_dir), "--db", db),
        f"the ledger's event {seq} is a grant, the receipt says withdraw",
    )


def test_receipt_verify_with_an_empty_key_folder_makes_no_key(
    receipt_file: tuple[Path, Path], tmp_path: Path
) -> None:
    path, _ = receipt_file
    empty = tmp_path / "empty"
    one_line_error(
        run("receipt", "verify", str(path), "--key-dir", str(empty)), "no receipt signing key"
    )
    assert not empty.exists() or not any(empty.iterdir())


def test_receipt_verify_names_a_file_that_is_not_json_or_missing(tmp_path: Path) -> None:
    bad = tmp_path / "receipt.txt"
    bad.write_text("this is not { json", "utf-8")
    one_line_error(run("receipt", "verify", str(bad)), str(bad), "not JSON")
    binary = tmp_path / "receipt.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    one_line_error(run("receipt", "verify", str(binary)), str(binary))
    missing = tmp_path / "missing.json"
    one_line_error(run("receipt", "verify", str(missing)), str(missing))


@pytest.mark.parametrize(
    "content", ["[]", "{}", '"receipt"', '{"signature": {"value": "x"}}'], ids=repr
)
def test_receipt_verify_refuses_json_that_is_no_receipt(
    db: str, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "r.json"
    path.write_text(content, "utf-8")
    one_line_error(run("receipt", "verify", str(path), "--db", db))


def test_receipt_new_key_rotates_and_old_receipts_still_verify(
    db: str, receipt_file: tuple[Path, Path]
) -> None:
    path, key_dir = receipt_file
    old = receipts.ReceiptKey.load(key_dir).key_id
    out = ok(run("receipt", "new-key", "--key-dir", str(key_dir), "--db", db))
    new = receipts.ReceiptKey.load(key_dir).key_id
    assert new != old and f"new receipt signing key {new}" in out and "ledger seq" in out
    out = ok(run("receipt", "verify", str(path), "--key-dir", str(key_dir), "--db", db))
    assert f"key {old}" in out and "the ledger agrees" in out


# ---- askfirst demo ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """``askfirst demo --no-serve`` run once: the folder and what it printed."""
    folder = tmp_path_factory.mktemp("demo") / "askfirst-demo"
    out = ok(run("demo", "--dir", str(folder), "--no-serve"))
    yield folder, out


def demo_ledger(folder: Path) -> Ledger:
    return open_ledger(f"sqlite:///{folder / 'askfirst.db'}", load_policy())


def test_demo_prints_how_to_sign_in(demo_dir: tuple[Path, str]) -> None:
    folder, out = demo_dir
    for needle in ("anna.keller", "jo.rivera", "priya.raman", "askfirst-demo", "staff"):
        assert needle in out, needle
    staff_password = (folder / "keys" / "staff-password.txt").read_text().strip()
    assert staff_password in out
    with demo_ledger(folder) as ledger:
        assert authenticate(ledger, "anna.keller", "askfirst-demo") is not None
        staff = authenticate(ledger, "staff", staff_password)
    assert staff is not None and staff.kind == "staff"


def test_demo_has_about_200_members_an_organization_and_minors(
    demo_dir: tuple[Path, str],
) -> None:
    folder, _ = demo_dir
    with demo_ledger(folder) as ledger:
        table = decide_many(ledger, "genai-training")
        with ledger.engine.connect() as conn:
            kinds = dict(
                conn.execute(sa.select(subject_state.c.subject_id, subject_state.c.kind)).all()
            )
            admins = conn.execute(
                sa.select(authority_state.c.delegate_id).where(
                    authority_state.c.subject_id == "org-acme",
                    authority_state.c.role == "page-admin",
                )
            ).scalars()
            admin_ids = set(admins)
        authority_events = [e for e in ledger.subject_events("org-acme") if e.type == "authority"]
        assert ledger.verify().ok
    assert 180 <= table.num_rows <= 220
    assert kinds["org-acme"] == "organization"
    assert sum(k == "member" for k in kinds.values()) >= 180
    # Two page admins, in the ledger itself and not only in the projection.
    assert len(admin_ids) == 2 and admin_ids <= set(kinds)
    assert {e.value for e in authority_events} == {f"grant:page-admin:{a}" for a in admin_ids}
    reasons = table.column("reason").to_pylist()
    assert 1 <= reasons.count("minor") <= 20
    assert reasons.count("granted") >= 1
    assert len(set(table.column("subject").to_pylist())) == table.num_rows


def test_demo_corpus_has_every_category_and_mentions(demo_dir: tuple[Path, str]) -> None:
    folder, _ = demo_dir
    corpus = folder / "corpus" / "corpus.jsonl"
    rows = [json.loads(line) for line in corpus.read_text("utf-8").splitlines()]
    assert rows
    assert {r["category"] for r in rows} == CORPUS_CATEGORIES
    with demo_ledger(folder) as ledger, ledger.engine.connect() as conn:
        known = set(conn.execute(sa.select(subject_state.c.subject_id)).scalars())
    assert {r["author_id"] for r in rows} <= known
    mentioning = [r for r in rows if re.search(r"@[a-z][\w.]+", r["text"])]
    assert len(mentioning) >= 20
    assert all(set(r["mentions"]) <= known for r in rows)
    assert any(r["mentions"] for r in mentioning)
    assert len({r["record_id"] for r in rows}) == len(rows)


def test_demo_run_again_reuses_the_folder(demo_dir: tuple[Path, str], tmp_path: Path) -> None:
    template, first_out = demo_dir
    folder = tmp_path / "again"
    shutil.copytree(template, folder)
    with demo_ledger(folder) as ledger:
        head = ledger.head()
    corpus = (folder / "corpus" / "corpus.jsonl").read_bytes()
    staff_password = (folder / "keys" / "staff-password.txt").read_text()

    again_out = ok(run("demo", "--dir", str(folder), "--no-serve"))
    printed_head = re.compile(r"ledger head (\d+) ([0-9a-f]{16})")
    first, again = printed_head.search(first_out), printed_head.search(again_out)
    assert first and again and first.groups() == again.groups() == (str(head.seq), head.hash[:16])

    with demo_ledger(folder) as ledger:
        assert ledger.head() == head
    assert (folder / "corpus" / "corpus.jsonl").read_bytes() == corpus
    assert (folder / "keys" / "staff-password.txt").read_text() == staff_password


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def askfirst_command() -> list[str]:
    script = Path(sys.executable).parent / "askfirst"
    if script.exists():
        return [str(script)]
    found = shutil.which("askfirst")
    assert found, "the askfirst command is not installed"
    return [found]


def test_demo_serves_the_web_app(demo_dir: tuple[Path, str], tmp_path: Path) -> None:
    template, _ = demo_dir
    folder = tmp_path / "served"
    shutil.copytree(template, folder)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "demo.out").open("wb")
    proc = subprocess.Popen(
        [*askfirst_command(), "demo", "--dir", str(folder), "--port", str(port), "--no-open"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "demo.out").read_text(errors="replace")
            try:
                status, _ = get(f"{base}/v1/health")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, (tmp_path / "demo.out").read_text(errors="replace")

        status, body = get(f"{base}/in/anna.keller")
        assert status == 200
        assert b"Anna Keller" in body
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    printed = (tmp_path / "demo.out").read_text(errors="replace")
    assert f"{base}/signin" in printed
    assert "Traceback" not in printed
