"""Cases (issue 17): deaths, representatives, objections and erasures, reviewed by staff.

Through the library and the CLI: each step is a ledger event with its actor; a death, a
representative and an erasure need two different reviewers (the ledger itself refuses the
proposer's approval, and any such effect that does not follow an approval); evidence is
checked by its content and stored outside the database.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from askfirst import Ledger, NewEvent, SubjectIn, accounts, cases, evidence, open_ledger
from askfirst.decisions import decide
from askfirst.errors import InputError, NotAuthorized
from askfirst.ledger.events import parse_case
from askfirst.ledger.tables import case_steps, events
from askfirst.ledger.tables import cases as cases_table
from askfirst.ledger.tables import evidence as evidence_table
from askfirst.policy import load_policy
from test_cli import ok, one_line_error, run

PASSWORD = "long-enough-1"


@pytest.fixture
def led(db_url: str) -> Iterator[Ledger]:
    """Members m1 (DE), m2 (US) and m3 (US); reviewers ana and ben; an editor, an auditor
    and an admin."""
    with open_ledger(db_url, load_policy(), create=True) as ledger:
        ledger.register(
            [
                SubjectIn(id="m1", handle="dora", names=["Dora Day"], jurisdiction="DE"),
                SubjectIn(id="m2", handle="eli", names=["Eli Egg"], jurisdiction="US"),
                SubjectIn(id="m3", handle="fay", names=["Fay Fig"], jurisdiction="US"),
            ]
        )
        hashed = accounts.hash_password(PASSWORD)
        for name, role in (
            ("ana", "reviewer"),
            ("ben", "reviewer"),
            ("eve", "policy-editor"),
            ("aud", "auditor"),
            ("adm", "admin"),
        ):
            accounts.create_account(
                ledger, name, PASSWORD, kind="staff", role=role, password_hash=hashed
            )
        yield ledger


@pytest.fixture
def store(tmp_path: Path) -> evidence.FolderStore:
    return evidence.FolderStore(tmp_path / "evidence")


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(out, format="PNG")
    return out.getvalue()


def case_events(ledger: Ledger) -> list[tuple[str, str, str]]:
    """(step, kind, actor) of every case event in the chain."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.value, events.c.actor).where(events.c.type == "case")
        ).all()
    out = []
    for value, actor in rows:
        parsed = parse_case(value)
        assert parsed is not None
        out.append((parsed[0], parsed[1], actor))
    return out


def count(ledger: Ledger, table: object) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


# ---- a death ------------------------------------------------------------------------------


def test_a_death_takes_two_reviewers_and_then_every_use_ends(led: Ledger) -> None:
    case = cases.open_case(
        led, "death", actor="system", subject="m2", link="https://news.example/obituary/eli-egg"
    )
    assert case.status == "open" and case.steps[0].step == "open"
    with pytest.raises(InputError, match="needs a proposal first"):
        cases.approve(led, case.id, "ana")
    proposed = cases.propose(led, case.id, "ana", "the obituary names him and his town")
    assert proposed.status == "proposed" and proposed.proposer == "staff:ana"
    head = led.head()
    with pytest.raises(NotAuthorized, match=r"proposed case \d+, so may not approve it too"):
        cases.approve(led, case.id, "ana")
    assert led.head() == head  # nothing written
    assert decide(led, "m2", "genai-training").reason != "deceased"
    done = cases.approve(led, case.id, "ben", "agreed")
    assert done.case.status == "approved"
    assert decide(led, "m2", "genai-training").reason == "deceased"
    assert case_events(led) == [
        ("open", "death", "system"),
        ("propose", "death", "staff:ana"),
        ("approve", "death", "staff:ben"),
    ]
    steps = cases.get(led, case.id).steps
    assert [(s.step, s.actor, s.reason) for s in steps] == [
        ("open", "system", None),
        ("propose", "staff:ana", "the obituary names him and his town"),
        ("approve", "staff:ben", "agreed"),
    ]
    with pytest.raises(InputError, match="already approved"):
        cases.reject(led, case.id, "ben", "too late")
    assert led.verify().ok


def test_only_reviewers_review(led: Ledger) -> None:
    case = cases.open_case(led, "death", actor="system", subject="m2", link="https://x.example/o")
    for staff, role in (("eve", "policy-editor"), ("aud", "auditor"), ("adm", "admin")):
        with pytest.raises(NotAuthorized, match=f"'{staff}' is a {role}, not a reviewer"):
            cases.propose(led, case.id, staff, "because")
    with pytest.raises(InputError, match="no staff account named 'nobody'"):
        cases.propose(led, case.id, "nobody", "because")
    assert [s.step for s in cases.get(led, case.id).steps] == ["open"]


def test_the_ledger_refuses_a_forged_second_pair_of_eyes(led: Ledger) -> None:
    """Appending case events by hand cannot skip rule 13: the proposer's own approval,
    an approval without a proposal, and a death outside an approval are all refused."""
    case = cases.open_case(led, "death", actor="system", subject="m2", link="https://x.example/o")
    cases.propose(led, case.id, "ana", "seen")
    value = "approve:death:{}:" + "0" * 64

    def approve_as(actor: str, *, then_death: bool = True) -> None:
        batch = [
            NewEvent(
                type="case", subject="m2", actor=actor, source="cli", value=value.format(case.id)
            )
        ]
        if then_death:
            batch.append(
                NewEvent(
                    type="status",
                    subject="m2",
                    actor=actor,
                    source=f"case:{case.id}",
                    value="deceased",
                )
            )
        led.append_many(batch)

    with pytest.raises(NotAuthorized, match="proposed case"):
        approve_as("staff:ana")
    with pytest.raises(NotAuthorized, match="reviewer acting in person"):
        approve_as("staff:token:robot")
    with pytest.raises(NotAuthorized, match="a death for 'm2' takes effect only through a case"):
        led.append(
            NewEvent(type="status", subject="m2", actor="staff:ben", source="cli", value="deceased")
        )
    other = cases.open_case(led, "death", actor="system", subject="m3", link="https://x.example/p")
    with pytest.raises(InputError, match="needs a proposal first"):
        led.append(
            NewEvent(
                type="case",
                subject="m3",
                actor="staff:ben",
                source="cli",
                value=f"approve:death:{other.id}:" + "0" * 64,
            )
        )
    assert decide(led, "m2", "genai-training").reason != "deceased"


# ---- a representative ---------------------------------------------------------------------


def died(led: Ledger, subject: str) -> None:
    case = cases.open_case(
        led, "death", actor="system", subject=subject, link="https://x.example/obituary"
    )
    cases.propose(led, case.id, "ana", "seen")
    cases.approve(led, case.id, "ben")


def test_a_representative_may_say_no_but_never_yes(
    led: Ledger, store: evidence.FolderStore
) -> None:
    letter = evidence.check(png(), name="letter.png")
    with pytest.raises(InputError, match="needs their e-mail"):
        cases.open_case(
            led, "representative", actor="system", subject="m2", files=[letter], store_=store
        )
    case = cases.open_case(
        led,
        "representative",
        actor="system",
        subject="m2",
        files=[letter],
        store_=store,
        email="sam@example.com",
    )
    cases.propose(led, case.id, "ana", "letter of administration")
    with pytest.raises(InputError, match="not recorded as deceased"):
        cases.approve(led, case.id, "ben")
    died(led, "m2")
    done = cases.approve(led, case.id, "ben")
    assert done.signin_secret and len(done.signin_secret) > 30
    account = accounts.use_signin_link(led, done.signin_secret)
    assert account is not None and account.kind == "representative"
    assert account.subject_id == "m2"
    assert accounts.use_signin_link(led, done.signin_secret) is None  # once
    rep = f"rep:{case.id}"
    from askfirst import privacy

    made = privacy.choose(led, "m2", "genai-training", "object", actor=rep, source="web")
    assert made.event.actor == rep
    with pytest.raises(NotAuthorized):
        privacy.choose(led, "m2", "genai-training", "grant", actor=rep, source="web")
    with pytest.raises(NotAuthorized):  # and for nobody else
        privacy.choose(led, "m3", "genai-training", "withdraw", actor=rep, source="web")


# ---- an objection -------------------------------------------------------------------------


def test_an_objection_makes_a_person_who_objects_to_everything(led: Ledger) -> None:
    with pytest.raises(InputError, match="names the names"):
        cases.open_case(led, "objection", actor="requester")
    case = cases.open_case(
        led,
        "objection",
        actor="requester",
        names=["Gil  Gray", "Gil Gray", "G. Gray"],
        reporter_email="gil@example.com",
        verify_reporter=True,
    )
    assert case.status == "unverified" and case.names == ("Gil Gray", "G. Gray")
    assert case.opened_by == f"requester:{case.id}"
    assert cases.listed(led) == []  # reviewers do not see it yet
    with pytest.raises(InputError, match="waits for its reporter"):
        cases.approve(led, case.id, "ana")
    cases.verify_reporter(led, case.id)
    assert [c.id for c in cases.listed(led)] == [case.id]
    with pytest.raises(InputError, match="one reviewer approves"):
        cases.propose(led, case.id, "ana", "x")
    done = cases.approve(led, case.id, "ana", "names match a real person")
    person = done.case.subject
    assert person == f"person-case-{case.id}"
    for purpose in led.policy.purposes:
        assert decide(led, person, purpose).reason == "withdrawn"
    assert led.verify().ok


# ---- evidence -----------------------------------------------------------------------------


def test_bad_evidence_opens_no_case_and_stores_nothing(
    tmp_path: Path, db_url: str, led: Ledger
) -> None:
    keys = tmp_path / "keys"
    bad = {
        "elf.pdf": b"%PDF-1.4\n" + b"\x7fELF\x02\x01\x01" + bytes(200),
        "page.png": b"<!doctype html><html><script>alert(1)</script></html>",
        "big.jpg": b"\xff\xd8\xff" + bytes(evidence.MAX_BYTES + 1 - 3),
        "empty.pdf": b"",
    }
    for name, data in bad.items():
        path = tmp_path / name
        path.write_bytes(data)
        res = run(
            "case",
            "open",
            "death",
            "--subject",
            "m2",
            "--evidence",
            str(path),
            "--key-dir",
            str(keys),
            "--db",
            db_url,
        )
        one_line_error(res, name)
    assert count(led, cases_table) == 0 and count(led, evidence_table) == 0
    folder = evidence.default_folder_for(keys)
    assert not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def test_the_cli_opens_reviews_and_shows_a_case(tmp_path: Path, db_url: str, led: Ledger) -> None:
    keys = tmp_path / "keys"
    scan = tmp_path / "death-certificate.png"
    scan.write_bytes(png())
    common = ("--key-dir", str(keys), "--db", db_url)
    opened = json.loads(
        ok(
            run(
                "case",
                "open",
                "death",
                "--subject",
                "m2",
                "--evidence",
                str(scan),
                "--json",
                *common,
            )
        )
    )
    case_id = opened["id"]
    assert opened["status"] == "open" and opened["evidence"][0]["media_type"] == "image/png"
    stored = [p for p in evidence.default_folder_for(keys).rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in stored] == [png()]
    listed = ok(run("case", "list", "--db", db_url))
    assert f"{case_id}\tdeath\topen\tm2" in listed
    ok(
        run(
            "case",
            "propose",
            str(case_id),
            "--staff",
            "ana",
            "--reason",
            "certificate",
            "--db",
            db_url,
        )
    )
    one_line_error(
        run("case", "approve", str(case_id), "--staff", "ANA", *common),
        "staff:ana proposed case",
        "second, different reviewer",
    )
    one_line_error(
        run("case", "approve", str(case_id), "--staff", "eve", *common),
        "'eve' is a policy-editor, not a reviewer",
    )
    ok(run("case", "approve", str(case_id), "--staff", "ben", *common))
    shown = json.loads(ok(run("case", "show", str(case_id), "--json", "--db", db_url)))
    assert [s["step"] for s in shown["steps"]] == ["open", "propose", "approve"]
    assert shown["evidence"][0]["sha256"] == evidence.check(png()).sha256
    assert decide(led, "m2", "genai-training").reason == "deceased"
    with led.engine.connect() as conn:
        details = conn.execute(select(case_steps.c.details).where(case_steps.c.step == "open"))
        assert json.loads(details.scalar_one())["evidence"] == [shown["evidence"][0]["sha256"]]


# ---- erasure ------------------------------------------------------------------------------

SECRETS = ("fayette.figueroa", "Fayette Figueroa", "fayette@example.com", "Fay F. Figueroa")


def every_row(ledger: Ledger) -> str:
    """Every value in every table askfirst owns, as one text (a dump of the database)."""
    from askfirst.ledger.tables import metadata

    parts = []
    with ledger.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


def test_an_erasure_deletes_everything_personal_and_the_chain_still_verifies(
    db_url: str, tmp_path: Path, store: evidence.FolderStore
) -> None:
    from askfirst import directory, mail, reports
    from askfirst.ledger.tables import content

    keys = tmp_path / "keys"
    with open_ledger(db_url, load_policy(), create=True) as led:
        led.register(
            [
                SubjectIn(id="m7", handle="fayette.figueroa", names=["Fayette Figueroa",
                          "Fay F. Figueroa"], email="fayette@example.com", jurisdiction="US"),
                SubjectIn(id="m8", handle="gus", names=["Gus Green"], jurisdiction="US"),
            ]
        )  # fmt: skip
        hashed = accounts.hash_password(PASSWORD)
        accounts.create_account(led, "fayette.figueroa", PASSWORD, kind="member", subject="m7")
        accounts.create_token(led, "fayette-app", ["decisions:read"], subject="m7")
        for name in ("ana", "ben"):
            accounts.create_account(led, name, PASSWORD, kind="staff", role="reviewer",
                                    password_hash=hashed)  # fmt: skip
        with led.engine.begin() as conn:
            conn.execute(content.insert(), [
                {"record_id": "r1", "author_id": "m7", "category": "post", "created_at": 1,
                 "text": "Fayette Figueroa here", "mentions": "[]", "public": True},
            ])  # fmt: skip
        led.append(NewEvent(type="choice", subject="m7", actor="m7", source="web",
                            purpose="genai-training", value="grant"))  # fmt: skip
        # They also reported someone else's death, from the same address.
        cases.open_case(led, "death", actor="requester", subject="m8",
                        link="https://x.example/gus", reporter_email="fayette@example.com",
                        verify_reporter=True)  # fmt: skip
        id_scan = evidence.check(png(), name="id.png")
        case = cases.open_case(led, "erasure", actor="m7", subject="m7", files=[id_scan],
                               store_=store, reporter_email="fayette@example.com",
                               statement="Please forget Fayette Figueroa entirely.")  # fmt: skip
        cases.propose(led, case.id, "ana", "the member asked, signed in")
        with pytest.raises(InputError, match="needs the evidence store"):
            cases.approve(led, case.id, "ben")
        done = cases.approve(led, case.id, "ben", store_=store,
                             names_key=directory.names_key(keys))  # fmt: skip
        assert done.case.erased_at is not None and done.case.statement is None

        report = led.verify()
        assert report.ok, report.problems + report.projection_problems
        assert decide(led, "m7", "genai-training").reason == "erased"
        dump = every_row(led)
        for secret in SECRETS:
            assert secret.lower() not in dump.lower(), secret
        assert not any(p.is_file() for p in store.root.rglob("*"))  # the document is gone
        for path in keys.rglob("*"):
            for secret in SECRETS:
                assert secret.encode() not in path.read_bytes()
        erased = reports.subject_report(led, "m7")["subject"]
        assert erased["erased_at"] is not None and erased["handle"] is None
        assert (erased["names"], erased["email"], erased["former"]) == ([], None, [])
        assert accounts.authenticate(led, "fayette.figueroa", PASSWORD) is None
        # The handle is free for someone else; nothing more is recorded for the erased.
        led.register([SubjectIn(id="m9", handle="fayette.figueroa", jurisdiction="US")])
        with pytest.raises(InputError, match="was erased"):
            led.append(NewEvent(type="choice", subject="m7", actor="m7", source="web",
                                purpose="genai-training", value="grant"))  # fmt: skip
        assert mail.pending(led) == 0
    if db_url.startswith("sqlite"):  # nor in the file's free pages (the handle is m9's now)
        db = Path(db_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # and -wal
        for secret in SECRETS[1:]:
            assert secret.encode() not in raw, secret


def test_a_request_nobody_confirmed_expires_with_what_was_personal_in_it(
    led: Ledger, store: evidence.FolderStore
) -> None:
    case = cases.open_case(led, "death", actor="requester", subject="m2",
                           reporter_email="who@example.com", link="https://x.example/o",
                           statement="he was my uncle", files=[evidence.check(png())],
                           store_=store, verify_reporter=True)  # fmt: skip
    assert any(p.is_file() for p in store.root.rglob("*"))
    day = 86_400 * 1_000_000
    assert cases.expire_unconfirmed(led, store, now=case.opened_at + 2 * day) == 0
    assert cases.expire_unconfirmed(led, store, now=case.opened_at + 4 * day) == 1
    gone = cases.get(led, case.id)
    assert gone.status == "expired" and gone.evidence == ()
    assert (gone.requester_email, gone.link, gone.statement) == (None, None, None)
    assert not any(p.is_file() for p in store.root.rglob("*"))
    assert cases.verify_reporter(led, case.id).status == "expired"  # a late link: nothing
    with pytest.raises(InputError, match="already expired"):
        cases.propose(led, case.id, "ana", "late")
    assert led.verify().ok
