"""The /v1 API after a snapshot is built: the model registry, retraining tasks, and a
member's "Your data in AI" — on the demo platform, in-process.

The demo builds one genai-training snapshot, registers model demo-writer 2026.1 on it
with 8 shards, and then one member in it says no: the snapshot is stale and the model has
one open task. Staff (a staff session, or a token with the admin scope) register model
versions and close tasks; a member reads where their own data went.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from askfirst import demo, privacy, times
from askfirst.gate.rebuild import rebuild_snapshot
from askfirst.ledger import Ledger
from askfirst.ledger.tables import snapshots, tasks
from askfirst.lineage import list_snapshots, shard_key, snapshots_of
from askfirst.models import list_tasks

GENAI, RESEARCH = "genai-training", "third-party-research"
ANNA, JO, ACME = "m001", "m101", "org-acme"  # the demo's sample subjects
MODEL, VERSION = demo.MODEL
DAY_US = 86_400 * times.MICROS


@dataclass(frozen=True)
class Withdrawn:
    """The demo member who said no after the model was trained, and their open task."""

    subject: str
    handle: str
    task: dict[str, Any]


@pytest.fixture
def withdrawn(app: FastAPI) -> Withdrawn:
    ledger: Ledger = app.state.ledger
    (task,) = list_tasks(ledger, status="open")
    handle = privacy.profile(ledger, task["subject"]).handle
    assert handle is not None
    return Withdrawn(task["subject"], handle, task)


@pytest.fixture
def snapshot_id(app: FastAPI) -> str:
    """The demo's one genai-training snapshot."""
    (snap,) = list_snapshots(app.state.ledger, GENAI)
    return str(snap["snapshot_id"])


@pytest.fixture
def admin(token: Callable[..., Any]) -> dict[str, str]:
    """The Authorization header of a token with the admin scope."""
    return dict(token(["admin"], name="ml-ops").headers)


def models_now(client: TestClient, headers: dict[str, str]) -> list[tuple[str, str]]:
    r = client.get("/v1/models", headers=headers)
    assert r.status_code == 200, r.text
    return [(m["name"], m["version"]) for m in r.json()]


def tasks_now(client: TestClient, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    r = client.get("/v1/tasks", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json())


def day_of(iso: str) -> str:
    """A time as the member pages write it: '2 Dec 2026'."""
    return privacy.day(times.to_micros(times.parse(iso)))


def relocate_snapshots(ledger: Ledger, template: demo.Demo, copy: demo.Demo) -> None:
    """Point this test's copy of the demo at its own snapshot and corpus files.

    The demo records absolute paths, so the copy's registry still names the template's
    folder; a rebuild there would delete the template's data for every later test.
    """
    old, new = str(template.folder), str(copy.folder)
    with ledger.engine.begin() as conn:
        for row in conn.execute(snapshots.select()).all():
            conn.execute(
                update(snapshots)
                .where(snapshots.c.id == row.id)
                .values(path=row.path.replace(old, new, 1), corpus=row.corpus.replace(old, new, 1))
            )


# ---- the model registry ----------------------------------------------------------------


def test_the_demos_model_is_listed_with_its_stale_snapshot_and_open_task(
    client: TestClient, admin: dict[str, str], snapshot_id: str
) -> None:
    r = client.get("/v1/models", headers=admin)
    assert r.status_code == 200, r.text
    (model,) = r.json()
    assert (model["name"], model["version"], model["shards"]) == (MODEL, VERSION, 8)
    assert model["owner"] == "ml-team@example.com"
    assert model["snapshots"] == [{"snapshot_id": snapshot_id, "purpose": GENAI, "status": "stale"}]
    assert (model["open_tasks"], model["closed_tasks"]) == (1, 0)


def test_staff_registers_a_model_version_by_snapshot_prefix_and_it_inherits_the_withdrawal(
    client: TestClient, admin: dict[str, str], snapshot_id: str, withdrawn: Withdrawn
) -> None:
    """The snapshot is already stale: a version trained on it must be retrained too."""
    body = {
        "name": "demo-summariser",
        "version": "1.0",
        "snapshots": [snapshot_id[:12]],
        "owner": "nlp@example.com",
        "shards": 4,
    }
    r = client.post("/v1/models", json=body, headers=admin)
    assert r.status_code == 201, r.text
    model = r.json()
    assert (model["name"], model["version"], model["shards"]) == ("demo-summariser", "1.0", 4)
    assert model["owner"] == "nlp@example.com"
    assert model["registered_by"] == "staff:token:ml-ops"
    assert [s["snapshot_id"] for s in model["snapshots"]] == [snapshot_id]
    assert (model["tasks_opened_now"], model["tasks_closed_now"]) == (1, 0)
    assert model["open_tasks"] == 1

    assert models_now(client, admin) == [("demo-summariser", "1.0"), (MODEL, VERSION)]
    (task,) = tasks_now(client, admin, model="demo-summariser")
    assert (task["subject"], task["snapshot_id"]) == (withdrawn.subject, snapshot_id)
    # Same records, same shard keys: shard k of 8 lands in shard k % 4 of 4.
    assert task["shards"] == sorted({s % 4 for s in withdrawn.task["shards"]})


def test_registering_on_two_snapshots_one_unknown_writes_nothing(
    client: TestClient, admin: dict[str, str], snapshot_id: str
) -> None:
    body = {"name": "half", "version": "1", "snapshots": [snapshot_id, "deadbeefdeadbeef"]}
    r = client.post("/v1/models", json=body, headers=admin)
    assert r.status_code == 400, r.text
    assert "deadbeefdeadbeef" in r.json()["error"]
    assert models_now(client, admin) == [(MODEL, VERSION)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"shards": 0}, "shards"),
        ({"shards": -3}, "shards"),
        ({"shards": 65_537}, "shards"),
        ({"shards": "many"}, "shards"),
        ({"snapshots": []}, "snapshots"),
        ({"snapshots": "SNAPSHOT"}, "snapshots"),
        ({"snapshots": ["c1eb"]}, "snapshots"),
        ({"name": ""}, "name"),
        ({"version": ""}, "version"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_malformed_model_is_refused_with_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    snapshot_id: str,
    change: dict[str, Any],
    field: str,
) -> None:
    body = {"name": "fine-model", "version": "1", "snapshots": [snapshot_id], **change}
    if body["snapshots"] == "SNAPSHOT":
        body["snapshots"] = snapshot_id  # a string, not a list
    r = client.post("/v1/models", json=body, headers=admin)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"], r.json()
    assert models_now(client, admin) == [(MODEL, VERSION)]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"snapshots": ["0123456789abcdef"]}, "0123456789abcdef"),
        ({"name": "my model"}, "model name"),
        ({"version": "v 2"}, "model version"),
    ],
)
def test_a_model_the_library_refuses_is_a_400_naming_what_is_wrong(
    client: TestClient,
    admin: dict[str, str],
    snapshot_id: str,
    change: dict[str, Any],
    named: str,
) -> None:
    body = {"name": "fine-model", "version": "1", "snapshots": [snapshot_id], **change}
    r = client.post("/v1/models", json=body, headers=admin)
    assert r.status_code == 400, r.text
    assert named in r.json()["error"]
    assert models_now(client, admin) == [(MODEL, VERSION)]


def test_registering_the_same_version_twice_is_refused(
    client: TestClient, admin: dict[str, str], snapshot_id: str
) -> None:
    r = client.post(
        "/v1/models",
        json={"name": MODEL, "version": VERSION, "snapshots": [snapshot_id]},
        headers=admin,
    )
    assert 400 <= r.status_code < 500, r.text
    assert MODEL in r.json()["error"] and VERSION in r.json()["error"]
    assert models_now(client, admin) == [(MODEL, VERSION)]
    (model,) = client.get("/v1/models", headers=admin).json()
    assert model["open_tasks"] == 1  # the old version's task is untouched


def test_a_staff_session_needs_the_csrf_header_to_register_a_model(
    client: TestClient,
    admin: dict[str, str],
    signed_in: Callable[..., Any],
    snapshot_id: str,
) -> None:
    staff = signed_in("staff")
    body = {"name": "by-staff", "version": "1", "snapshots": [snapshot_id]}
    r = staff.post("/v1/models", json=body)
    assert r.status_code == 403, r.text
    assert models_now(client, admin) == [(MODEL, VERSION)]
    r = staff.post("/v1/models", json=body, headers={"X-CSRF-Token": "not-the-token"})
    assert r.status_code == 403, r.text
    assert models_now(client, admin) == [(MODEL, VERSION)]

    r = staff.post("/v1/models", json=body, headers=staff.csrf_header)
    assert r.status_code == 201, r.text
    assert r.json()["registered_by"] == "staff:staff"
    assert ("by-staff", "1") in models_now(client, admin)


def test_a_member_may_neither_register_models_nor_see_the_registry(
    client: TestClient,
    admin: dict[str, str],
    signed_in: Callable[..., Any],
    token: Callable[..., Any],
    snapshot_id: str,
) -> None:
    anna = signed_in("anna.keller")
    body = {"name": "by-anna", "version": "1", "snapshots": [snapshot_id]}
    assert anna.post("/v1/models", json=body, headers=anna.csrf_header).status_code == 403
    assert anna.get("/v1/models").status_code == 403
    assert anna.get("/v1/tasks").status_code == 403
    reader = token(["decisions:read"]).headers
    assert client.get("/v1/tasks", headers=reader).status_code == 403
    assert client.get("/v1/models").status_code == 401
    assert models_now(client, admin) == [(MODEL, VERSION)]


# ---- tasks -----------------------------------------------------------------------------


def test_the_open_task_names_the_model_subject_snapshot_and_shards(
    app: FastAPI, client: TestClient, admin: dict[str, str], snapshot_id: str, withdrawn: Withdrawn
) -> None:
    (task,) = tasks_now(client, admin)
    assert task["status"] == "open"
    assert task["model"] == {"name": MODEL, "version": VERSION, "owner": "ml-team@example.com"}
    assert (task["subject"], task["snapshot_id"], task["purpose"]) == (
        withdrawn.subject,
        snapshot_id,
        GENAI,
    )
    shards = task["shards"]
    assert isinstance(shards, list) and shards, shards
    assert all(isinstance(s, int) and 0 <= s < 8 for s in shards), shards
    assert shards == sorted(set(shards))
    assert shard_key(withdrawn.subject) % 8 in shards  # their own posts' shard
    assert isinstance(task["age_days"], float) and 0 <= task["age_days"] < 1
    assert task["closed_at"] is None and task["note"] is None
    assert withdrawn.subject in task["what"] and snapshot_id[:16] in task["what"]
    # The withdrawal that opened it is the member's own "no" in the ledger.
    events = app.state.ledger.subject_events(withdrawn.subject)
    (ev,) = [e for e in events if e.seq == task["event_seq"]]
    assert (ev.type, ev.purpose, ev.value) == ("choice", GENAI, "withdraw")


def test_tasks_are_listed_oldest_first_with_their_age_and_filters(
    app: FastAPI,
    client: TestClient,
    admin: dict[str, str],
    signed_in: Callable[..., Any],
    withdrawn: Withdrawn,
) -> None:
    anna = signed_in("anna.keller")  # in the snapshot, under her yes; now she says no too
    r = anna.post(
        f"/v1/subjects/{ANNA}/choices",
        json={"purpose": GENAI, "action": "withdraw"},
        headers=anna.csrf_header,
    )
    assert r.status_code == 201, r.text
    first, second = tasks_now(client, admin)
    assert [first["subject"], second["subject"]] == [withdrawn.subject, ANNA]
    assert first["opened_at"] <= second["opened_at"]

    # Oldest first means by when a task was opened, not by its number.
    ledger: Ledger = app.state.ledger
    three_days_ago = times.to_micros(times.now()) - 3 * DAY_US
    with ledger.engine.begin() as conn:
        conn.execute(
            update(tasks).where(tasks.c.id == second["id"]).values(opened_at=three_days_ago)
        )
    listed = tasks_now(client, admin)
    assert [t["subject"] for t in listed] == [ANNA, withdrawn.subject]
    assert listed[0]["age_days"] == 3.0
    assert listed[1]["age_days"] < 1

    assert [t["subject"] for t in tasks_now(client, admin, subject=ANNA)] == [ANNA]
    assert len(tasks_now(client, admin, model=MODEL)) == 2
    assert tasks_now(client, admin, model="no-such-model") == []
    assert tasks_now(client, admin, status="closed") == []
    assert len(tasks_now(client, admin, status="all")) == 2
    r = client.get("/v1/tasks", params={"status": "pending"}, headers=admin)
    assert r.status_code == 422 and "status" in r.json()["error"], r.text


def test_a_withdrawal_for_another_purpose_opens_no_task(
    client: TestClient, admin: dict[str, str], signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    r = anna.post(
        f"/v1/subjects/{ANNA}/choices",
        json={"purpose": RESEARCH, "action": "withdraw"},
        headers=anna.csrf_header,
    )
    assert r.status_code == 201, r.text
    assert len(tasks_now(client, admin)) == 1
    assert anna.get(f"/v1/subjects/{ANNA}/ai").json()["snapshots"][0]["in_words"] == "In use."


def test_closing_a_task_by_hand_needs_a_note_and_happens_once(
    client: TestClient, admin: dict[str, str], signed_in: Callable[..., Any], withdrawn: Withdrawn
) -> None:
    url = f"/v1/tasks/{withdrawn.task['id']}/close"
    for body in ({}, {"note": ""}):
        r = client.post(url, json=body, headers=admin)
        assert r.status_code == 422, r.text
        assert "note" in r.json()["error"]
    r = client.post(url, json={"note": "   "}, headers=admin)
    assert r.status_code == 400, r.text
    assert "note" in r.json()["error"]
    assert len(tasks_now(client, admin)) == 1

    note = "unlearned shards by retraining them from the last checkpoint"
    r = client.post(url, json={"note": note}, headers=admin)
    assert r.status_code == 200, r.text
    closed = r.json()
    assert (closed["id"], closed["status"], closed["note"]) == (
        withdrawn.task["id"],
        "closed",
        note,
    )
    assert closed["closed_by"] == "staff:token:ml-ops"
    assert closed["closed_at"] is not None
    assert tasks_now(client, admin) == []
    assert [t["id"] for t in tasks_now(client, admin, status="closed")] == [withdrawn.task["id"]]
    (model,) = client.get("/v1/models", headers=admin).json()
    assert (model["open_tasks"], model["closed_tasks"]) == (0, 1)

    again = client.post(url, json={"note": "again"}, headers=admin)
    assert 400 <= again.status_code < 500, again.text
    assert "already closed" in again.json()["error"]
    (still,) = tasks_now(client, admin, status="closed")
    assert still["note"] == note  # the first note stands

    # The member sees the model's part done, while the snapshot still waits for a rebuild.
    member = signed_in(withdrawn.handle).get(f"/v1/subjects/{withdrawn.subject}/ai").json()
    (snap,) = member["snapshots"]
    assert snap["in_words"].startswith("Waiting to be rebuilt without your data since")
    (m,) = snap["models"]
    assert m["task"]["status"] == "closed" and m["task"]["note"] == note
    assert m["in_words"].startswith("Retrained or unlearned without your data on")
    assert member["summary"]["retraining_pending"] == 0


@pytest.mark.parametrize(("task_id", "status"), [(999, 404), (0, 422), ("one", 422)])
def test_closing_a_task_that_does_not_exist_is_refused(
    client: TestClient, admin: dict[str, str], task_id: Any, status: int
) -> None:
    r = client.post(f"/v1/tasks/{task_id}/close", json={"note": "done"}, headers=admin)
    assert r.status_code == status, r.text
    assert len(tasks_now(client, admin)) == 1


def test_a_staff_session_needs_the_csrf_header_to_close_a_task(
    client: TestClient, admin: dict[str, str], signed_in: Callable[..., Any], withdrawn: Withdrawn
) -> None:
    staff = signed_in("staff")
    url = f"/v1/tasks/{withdrawn.task['id']}/close"
    assert staff.post(url, json={"note": "done"}).status_code == 403
    assert len(tasks_now(client, admin)) == 1
    r = staff.post(url, json={"note": "done"}, headers=staff.csrf_header)
    assert r.status_code == 200, r.text
    assert r.json()["closed_by"] == "staff:staff"
    assert tasks_now(client, admin) == []


# ---- Your data in AI -------------------------------------------------------------------


def test_the_withdrawn_member_reads_where_their_data_went(
    signed_in: Callable[..., Any], snapshot_id: str, withdrawn: Withdrawn
) -> None:
    me = signed_in(withdrawn.handle)
    r = me.get(f"/v1/subjects/{withdrawn.subject}/ai")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["subject"] == withdrawn.subject
    (snap,) = body["snapshots"]
    assert (snap["snapshot_id"], snap["purpose"], snap["status"]) == (snapshot_id, GENAI, "stale")
    assert snap["author_records"] > 0
    assert "author" in snap["role"]
    assert snap["included_under"]["reason"] == "granted"
    assert snap["withdrawn"]["event_seq"] == withdrawn.task["event_seq"]
    assert snap["rebuilt_as"] is None
    since = day_of(snap["withdrawn"]["at"])
    assert snap["in_words"].startswith(f"Waiting to be rebuilt without your data since {since}")
    (model,) = snap["models"]
    assert (model["name"], model["version"]) == (MODEL, VERSION)
    assert model["task"]["id"] == withdrawn.task["id"]
    assert model["task"]["status"] == "open"
    opened = day_of(model["task"]["opened_at"])
    assert model["in_words"] == f"Retraining or unlearning pending since {opened}."
    assert body["summary"] == {
        "snapshots": 1,
        "snapshots_waiting_for_rebuild": 1,
        "models": 1,
        "retraining_pending": 1,
    }

    page = me.get("/settings/your-data-in-ai")
    assert page.status_code == 200
    assert f"Waiting to be rebuilt without your data since {since}" in page.text
    assert f"Retraining or unlearning pending since {opened}" in page.text
    assert snapshot_id[:16] in page.text
    twin = me.get("/settings/your-data-in-ai.json").json()
    assert twin.pop("acting_for_other") is False
    assert twin.pop("name")  # how the page names whose data it shows
    assert twin == body


def test_a_member_may_not_read_another_members_data_in_ai(
    signed_in: Callable[..., Any], withdrawn: Withdrawn
) -> None:
    jo = signed_in("jo.rivera")
    r = jo.get(f"/v1/subjects/{withdrawn.subject}/ai")
    assert r.status_code == 403, r.text
    assert withdrawn.subject in r.json()["error"]
    assert jo.get(f"/settings/your-data-in-ai.json?subject={withdrawn.subject}").status_code == 403
    me = signed_in(withdrawn.handle)
    assert me.get(f"/v1/subjects/{ANNA}/ai").status_code == 403


def test_a_member_in_the_snapshot_who_said_yes_sees_it_in_use(
    signed_in: Callable[..., Any], snapshot_id: str
) -> None:
    anna = signed_in("anna.keller")
    (snap,) = anna.get(f"/v1/subjects/{ANNA}/ai").json()["snapshots"]
    assert (snap["snapshot_id"], snap["withdrawn"], snap["in_words"]) == (
        snapshot_id,
        None,
        "In use.",
    )
    assert snap["included_under"]["in_words"].startswith("Used: you said yes")
    (model,) = snap["models"]
    assert (model["task"], model["in_words"]) == (
        None,
        "Trained with your data, which you allowed.",
    )


def test_a_member_not_in_any_snapshot_is_told_so(signed_in: Callable[..., Any]) -> None:
    jo = signed_in("jo.rivera")
    body = jo.get(f"/v1/subjects/{JO}/ai").json()
    assert body["snapshots"] == []
    assert body["summary"]["snapshots"] == 0
    assert "No training snapshot holds your data." in jo.get("/settings/your-data-in-ai").text


def test_a_page_admin_and_staff_read_the_organizations_data_in_ai(
    client: TestClient, admin: dict[str, str], signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    r = anna.get(f"/v1/subjects/{ACME}/ai")
    assert r.status_code == 200, r.text
    assert r.json()["subject"] == ACME
    page = anna.get(f"/settings/your-data-in-ai.json?subject={ACME}").json()
    assert page["acting_for_other"] is True
    assert client.get(f"/v1/subjects/{ACME}/ai", headers=admin).status_code == 200
    unknown = client.get("/v1/subjects/nobody-here/ai", headers=admin)
    assert unknown.status_code == 404, unknown.text
    assert "nobody-here" in unknown.json()["error"]


# ---- withdraw -> rebuild -> retrain ------------------------------------------------------


def test_a_rebuild_and_a_new_model_version_close_the_task_and_the_member_sees_it(
    app: FastAPI,
    client: TestClient,
    admin: dict[str, str],
    signed_in: Callable[..., Any],
    demo_template: demo.Demo,
    demo_dir: demo.Demo,
    snapshot_id: str,
    withdrawn: Withdrawn,
) -> None:
    ledger: Ledger = app.state.ledger
    relocate_snapshots(ledger, demo_template, demo_dir)
    me = signed_in(withdrawn.handle)

    # A new version of a model trained on the stale snapshot settles nothing.
    r = client.post(
        "/v1/models",
        json={"name": MODEL, "version": "2026.1-hotfix", "snapshots": [snapshot_id]},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert (r.json()["tasks_closed_now"], r.json()["tasks_opened_now"]) == (0, 1)

    (rebuilt,) = rebuild_snapshot(ledger, snapshot_id)
    new_id = rebuilt.new.snapshot_id
    assert new_id != snapshot_id
    assert [s["snapshot_id"] for s in snapshots_of(ledger, withdrawn.subject)] == [snapshot_id]

    (snap,) = me.get(f"/v1/subjects/{withdrawn.subject}/ai").json()["snapshots"]
    assert (snap["status"], snap["rebuilt_as"]) == ("retired", new_id)
    assert snap["in_words"].startswith("Rebuilt without your data on")
    assert {m["in_words"].split(" since")[0] for m in snap["models"]} == {
        "Retraining or unlearning pending"
    }
    assert len(tasks_now(client, admin)) == 2

    # The retired snapshot can no longer be trained on; the answer points at its rebuild.
    r = client.post(
        "/v1/models",
        json={"name": MODEL, "version": "2026.2", "snapshots": [snapshot_id]},
        headers=admin,
    )
    assert r.status_code == 400, r.text
    assert "retired" in r.json()["error"] and new_id[:16] in r.json()["error"]

    # Another model's version on the rebuilt snapshot does not settle demo-writer's tasks.
    r = client.post(
        "/v1/models",
        json={"name": "other-model", "version": "1", "snapshots": [new_id]},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["tasks_closed_now"] == 0
    assert len(tasks_now(client, admin)) == 2

    r = client.post(
        "/v1/models",
        json={"name": MODEL, "version": "2026.2", "snapshots": [new_id], "shards": 8},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["tasks_closed_now"] == 2
    assert r.json()["open_tasks"] == 0
    assert tasks_now(client, admin) == []
    closed = tasks_now(client, admin, status="closed")
    assert {t["model"]["version"] for t in closed} == {VERSION, "2026.1-hotfix"}
    assert all(f"{MODEL} 2026.2" in t["note"] for t in closed), closed

    body = me.get(f"/v1/subjects/{withdrawn.subject}/ai").json()
    (snap,) = body["snapshots"]
    assert snap["in_words"].startswith("Rebuilt without your data on")
    assert [m["version"] for m in snap["models"]] == [VERSION, "2026.1-hotfix"]
    for m in snap["models"]:
        assert m["task"]["status"] == "closed"
        assert (
            m["in_words"]
            == f"Retrained or unlearned without your data on {day_of(m['task']['closed_at'])}."
        )
    assert body["summary"]["snapshots_waiting_for_rebuild"] == 0
    assert body["summary"]["retraining_pending"] == 0
    page = me.get("/settings/your-data-in-ai").text
    assert "Rebuilt without your data" in page
    assert "Retrained or unlearned" in page
    assert "Retraining or unlearning pending" not in page

    # A member who said yes sees the new snapshot in use, and the old one rebuilt.
    anna = signed_in("anna.keller").get(f"/v1/subjects/{ANNA}/ai").json()["snapshots"]
    assert [(s["snapshot_id"], s["status"]) for s in anna] == [
        (new_id, "live"),
        (snapshot_id, "retired"),
    ]
    assert anna[0]["in_words"] == "In use."
    assert anna[1]["in_words"].startswith("Rebuilt on")


# ---- the pages' doors ------------------------------------------------------------------


def test_the_tasks_page_is_for_staff_and_your_data_in_ai_asks_to_sign_in(
    client: TestClient, signed_in: Callable[..., Any]
) -> None:
    r = client.get("/settings/your-data-in-ai", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/signin?next=/settings/your-data-in-ai"
    assert client.get("/settings/your-data-in-ai.json").status_code == 401
    assert client.get("/admin/tasks.json").status_code == 401
    r = client.get("/admin/tasks", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")

    anna = signed_in("anna.keller")
    assert anna.get("/admin/tasks").status_code == 403
    assert anna.get("/admin/tasks.json").status_code == 403
    staff = signed_in("staff")
    assert len(staff.get("/admin/tasks.json").json()["open"]) == 1
    assert staff.get("/admin.json").json()["open_tasks"] == 1
