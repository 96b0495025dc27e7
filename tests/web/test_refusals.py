"""A refusal names who it is about in plain words: "the data of subject 'm101'", never
"subject 'm101''s data" (a quoted id followed by 's reads as a stray quote)."""

from __future__ import annotations

from collections.abc import Callable

from httpx import Response

from .conftest import ApiToken, WebClient

ANNA, JO = "m001", "m101"


def _says(res: Response, *needles: str) -> str:
    assert res.status_code == 403, (res.status_code, res.text)
    detail: str = res.json()["error"]
    assert "''" not in detail and "'s " not in detail, detail
    for needle in needles:
        assert needle in detail, (needle, detail)
    return detail


def test_reading_someone_elses_data_is_refused_in_plain_words(
    client: WebClient, token: Callable[..., ApiToken]
) -> None:
    mine = token(["choices:write"], subject=ANNA)
    _says(client.get(f"/v1/subjects/{JO}", headers=mine.headers), f"'{JO}'", "data")


def test_changing_someone_elses_choices_is_refused_in_plain_words(
    client: WebClient, token: Callable[..., ApiToken]
) -> None:
    mine = token(["choices:write"], subject=ANNA)
    res = client.post(
        f"/v1/subjects/{JO}/choices",
        json={"purpose": "genai-training", "action": "grant"},
        headers=mine.headers,
    )
    _says(res, f"'{JO}'", "choices")


def test_someone_elses_settings_page_is_refused_in_plain_words(
    signed_in: Callable[..., WebClient],
) -> None:
    anna = signed_in("anna.keller")
    _says(anna.get(f"/settings/data-privacy.json?subject={JO}"), f"'{JO}'", "settings")
