"""Fuzz the whole /v1 API from its own OpenAPI with schemathesis: no 5xx, answers match.

Requests carry an admin token so that they get past authorization and reach the code
behind it; each operation runs on its own copy of the demo platform (examples of one
operation share it, so registered subjects and choices pile up as they would in use).

Below the fuzz test are minimal reproductions of what fuzzing and probing the schema's
edges once found (huge integers, times at the limits, shadowed routes, lax coercion,
undocumented error answers), kept as regression tests.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from askfirst import privacy, receipts
from askfirst.receipts import ReceiptKey

GENAI = "genai-training"
ANNA = "m001"
MAX_EXAMPLES = 25
EXCLUDED: list[Any] = []  # every check runs
# A schema-valid request may still be refused for what it asks (an unknown purpose, a
# subject registered twice, a receipt for an event that is not a choice): any 4xx but 422,
# which would mean the schema promises what validation refuses. Registering subjects is
# the exception: a jurisdiction must be an ISO 3166 code, which the schema cannot list.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429"]
            }
        },
        "operations": [
            {
                "include-path": "/v1/subjects",
                "include-method": "POST",
                "checks": {"positive_data_acceptance": {"enabled": False}},
            }
        ],
    }
)


@pytest.fixture
def api_schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)


@pytest.fixture
def admin_headers(token: Callable[..., Any]) -> dict[str, str]:
    return dict(token(["admin"]).headers)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: Any, admin_headers: dict[str, str]) -> None:
    case.call_and_validate(headers=admin_headers, excluded_checks=EXCLUDED)


# ---- reproductions ---------------------------------------------------------------------


@pytest.fixture
def raw(app: FastAPI) -> Iterator[TestClient]:
    """A client that sees a server error as the 500 a caller would get."""
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/v1/receipts/99999999999999999999", None),
        ("/v1/events", {"after": 2**63}),
        (f"/v1/subjects/{ANNA}/events", {"after": 2**64}),
    ],
    ids=["receipt-seq", "events-after", "subject-events-after"],
)
def test_huge_integers_are_a_client_error(
    raw: TestClient, admin_headers: dict[str, str], url: str, params: dict[str, Any] | None
) -> None:
    r = raw.get(url, params=params, headers=admin_headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
@pytest.mark.parametrize("endpoint", ["one", "batch"])
def test_at_at_the_limits_of_time_is_a_client_error(
    raw: TestClient, admin_headers: dict[str, str], at: str, endpoint: str
) -> None:
    if endpoint == "one":
        r = raw.get(
            f"/v1/decisions/{ANNA}", params={"purpose": GENAI, "at": at}, headers=admin_headers
        )
    else:
        r = raw.post(
            "/v1/decisions/batch",
            json={"purpose": GENAI, "subjects": [ANNA], "at": at},
            headers=admin_headers,
        )
    # A client error naming the field (a string, as the schema says, but no usable time).
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["error"].startswith("at: ")


def _self_signed(app: FastAPI, key_dir: Any, ledger_part: Any) -> dict[str, Any]:
    """A receipt signed by a key of the sender's own, whose ``ledger`` part is
    ``ledger_part``: anyone can make one and post it to the public verify endpoint."""
    ledger = app.state.ledger
    ev = privacy.choose(ledger, ANNA, GENAI, "withdraw", actor=ANNA, source="test").event
    key = ReceiptKey.load(key_dir)
    receipt = copy.deepcopy(receipts.build(ledger, ev, key, withdraw_url="http://x/"))
    receipt["ledger"] = ledger_part
    signature = key.private.sign(receipts.canonical(receipt))
    receipt["signature"]["value"] = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    well_signed = receipts.verify(receipt, [receipts.KeySet.of([key])])
    assert well_signed == [], "the reproduction's receipt must be well signed"
    return receipt


@pytest.mark.parametrize(
    "ledger_part",
    ["not an object", {"eventSeq": 10**30, "eventHash": "00", "head": {}}],
    ids=["ledger-a-string", "seq-beyond-64-bits"],
)
def test_verifying_a_malformed_receipt_says_invalid(
    app: FastAPI, raw: TestClient, tmp_path: Any, ledger_part: Any
) -> None:
    receipt = _self_signed(app, tmp_path / "someone-elses-key", ledger_part)
    r = raw.post("/v1/receipts/verify", json=receipt)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["valid"] is False


def test_openapi_documents_the_error_answers(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    # What the API really answers ...
    assert client.get(f"/v1/decisions/{ANNA}", params={"purpose": GENAI}).status_code == 401
    unknown = client.get(
        f"/v1/decisions/{ANNA}", params={"purpose": "no-such-purpose"}, headers=admin_headers
    )
    assert unknown.status_code == 404
    # ... is what the schema says it may answer.
    documented = app.openapi()["paths"]["/v1/decisions/{subject_id}"]["get"]["responses"]
    assert {"401", "403", "404"} <= set(documented), sorted(documented)


@pytest.mark.parametrize("path", ["/v1/receipts/verify", "/v1/decisions/batch"])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_wrong_method_on_a_post_only_path_is_405_naming_post(
    client: TestClient, path: str, method: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


def test_numeric_at_is_refused(client: TestClient, admin_headers: dict[str, str]) -> None:
    r = client.get(
        f"/v1/decisions/{ANNA}", params={"purpose": GENAI, "at": "20260301"}, headers=admin_headers
    )
    assert r.status_code == 400, r.json()
    assert r.json()["error"].startswith("at: ")


def test_subject_minor_must_be_a_boolean(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    before = app.state.ledger.head()
    r = client.post(
        "/v1/subjects", json=[{"id": "lax-minor", "minor": "yes"}], headers=admin_headers
    )
    assert r.status_code == 422, r.text
    assert app.state.ledger.head() == before
