"""Signing in: a wrong password is told plainly, on the form, and signs nobody in."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_a_wrong_password_shows_the_form_again_with_an_error(client: TestClient) -> None:
    form = client.get("/signin")
    match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert match
    r = client.post(
        "/signin",
        data={"username": "jo.rivera", "password": "not-the-password", "csrf_token": match[1]},
        follow_redirects=False,
    )
    assert r.status_code == 401
    assert "That username and password do not match." in r.text
    assert 'name="csrf_token"' in r.text  # the form can be sent again
    assert client.get("/settings", follow_redirects=False).status_code == 303
