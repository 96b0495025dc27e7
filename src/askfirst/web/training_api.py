"""The HTTP API for what happens after a snapshot is built: models, tasks, "Your data in AI".

Staff (or a token with the admin scope) register model versions and work through the
retraining / unlearning tasks; a member reads where their own data went.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from askfirst.data_in_ai import data_in_ai
from askfirst.models import close_task, list_models, list_tasks, register_model
from askfirst.web.auth import (
    LedgerDep,
    PrincipalDep,
    check_session_write,
    require,
    require_readable,
)
from askfirst.web.errors import ERROR_RESPONSES
from askfirst.web.limits import StrictJsonRoute

router = APIRouter(
    prefix="/v1", tags=["v1"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    version: str = Field(min_length=1, max_length=64)
    snapshots: list[Annotated[str, Field(min_length=8, max_length=64)]] = Field(
        min_length=1, max_length=100, description="Snapshot ids (or unique 8+ char prefixes)"
    )
    owner: str | None = Field(default=None, max_length=255)
    shards: int | None = Field(
        default=None,
        ge=1,
        le=65_536,
        strict=True,
        description="Trained in N shards by shard_key % N",
    )


class ModelSnapshot(BaseModel):
    snapshot_id: str
    purpose: str
    status: str


class ModelPublic(BaseModel):
    number: int
    name: str
    version: str
    owner: str | None
    shards: int | None
    registered_by: str
    registered_at: str
    snapshots: list[ModelSnapshot]
    open_tasks: int
    closed_tasks: int
    tasks_closed_now: int | None = None
    tasks_opened_now: int | None = None


class TaskModel(BaseModel):
    name: str
    version: str
    owner: str | None


class TaskPublic(BaseModel):
    id: int
    status: str
    model: TaskModel
    snapshot_id: str
    purpose: str
    subject: str
    role: str
    shards: list[int] | None = Field(description="null: every shard (or an unsharded model)")
    event_seq: int
    opened_at: str
    age_days: float
    closed_at: str | None
    closed_by: str | None
    note: str | None
    what: str


class TaskClose(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=2000, description="What was done")


class ChoiceBasis(BaseModel):
    reason: str
    event_seq: int | None
    in_words: str


class Withdrawal(BaseModel):
    at: str
    reason: str
    event_seq: int


class TaskState(BaseModel):
    id: int
    status: str
    opened_at: str
    closed_at: str | None
    note: str | None


class ModelUse(BaseModel):
    name: str
    version: str
    owner: str | None
    registered_at: str
    task: TaskState | None
    in_words: str


class SnapshotUse(BaseModel):
    snapshot_id: str
    purpose: str
    purpose_title: str
    as_of: str
    built_at: str
    status: str
    role: str
    role_in_words: str
    author_records: int
    mention_records: int
    included_under: ChoiceBasis
    withdrawn: Withdrawal | None
    rebuilt_as: str | None
    in_words: str
    models: list[ModelUse]


class DataInAISummary(BaseModel):
    snapshots: int
    snapshots_waiting_for_rebuild: int
    models: int
    retraining_pending: int


class DataInAIPublic(BaseModel):
    subject: str
    snapshots: list[SnapshotUse]
    summary: DataInAISummary


@router.post(
    "/models",
    response_model=ModelPublic,
    status_code=201,
    summary="Register a model version and the snapshots it was trained on (admin)",
)
def create_model(
    body: ModelCreate, request: Request, principal: PrincipalDep, ledger: LedgerDep
) -> dict[str, Any]:
    require(principal, "operate")
    check_session_write(request, principal)
    return register_model(
        ledger,
        body.name,
        body.version,
        body.snapshots,
        owner=body.owner,
        shards=body.shards,
        actor=principal.actor,
    )


@router.get("/models", response_model=list[ModelPublic], summary="Model versions (admin)")
def get_models(principal: PrincipalDep, ledger: LedgerDep) -> list[dict[str, Any]]:
    require(principal, "read")
    return list_models(ledger)


@router.get(
    "/tasks",
    response_model=list[TaskPublic],
    summary="Retraining / unlearning tasks, oldest first (admin)",
)
def get_tasks(
    principal: PrincipalDep,
    ledger: LedgerDep,
    status: Literal["open", "closed", "all"] = "open",
    subject: Annotated[str | None, Query(max_length=255)] = None,
    model: Annotated[str | None, Query(max_length=255)] = None,
) -> list[dict[str, Any]]:
    require(principal, "read")
    return list_tasks(
        ledger, status=None if status == "all" else status, subject=subject, model=model
    )


@router.post(
    "/tasks/{task_id}/close", response_model=TaskPublic, summary="Close a task by hand (admin)"
)
def close_one_task(
    task_id: Annotated[int, Path(ge=1, le=(1 << 31) - 1)],
    body: TaskClose,
    request: Request,
    principal: PrincipalDep,
    ledger: LedgerDep,
) -> dict[str, Any]:
    require(principal, "operate")
    check_session_write(request, principal)
    return close_task(ledger, task_id, body.note, actor=principal.actor)


@router.get(
    "/subjects/{subject_id}/ai",
    response_model=DataInAIPublic,
    summary="Your data in AI: the snapshots and models that used a subject's data",
)
def subject_data_in_ai(
    subject_id: str, principal: PrincipalDep, ledger: LedgerDep
) -> dict[str, Any]:
    require_readable(principal, subject_id)
    return data_in_ai(ledger, subject_id)
