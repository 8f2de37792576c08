"""Login, tokens, the dashboard cookie with CSRF, logout, lockout."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD


def login(client: TestClient, password: str = ADMIN_PASSWORD, username: str = "admin") -> object:
    return client.post("/api/v1/auth/login", json={"username": username, "password": password})


def test_login_returns_a_token_pair_and_sets_the_dashboard_cookies(client: TestClient) -> None:
    response = login(client)
    assert response.status_code == 200  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["access_token"]
    assert body["refresh_token"]
    cookies = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    session_cookie = next(c for c in cookies if c.startswith("konan_session="))
    assert "HttpOnly" in session_cookie
    assert "samesite=lax" in session_cookie.lower()
    assert any(c.startswith("konan_csrf=") and "HttpOnly" not in c for c in cookies)


def test_me_with_a_bearer_token(client: TestClient, admin_token: str) -> None:
    response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "admin"
    assert body["is_admin"] is True
    assert body["projects"] == [{"name": "default", "role": "owner"}]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer not-a-jwt", "Basic YWRtaW46eA==", "Bearer kn_abc123"],
)
def test_me_without_a_valid_credential_is_401(client: TestClient, header: str | None) -> None:
    client.cookies.clear()
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_refresh_token_is_not_an_access_token(client: TestClient) -> None:
    refresh = login(client).json()["refresh_token"]  # type: ignore[attr-defined]
    client.cookies.clear()
    response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {refresh}"})
    assert response.status_code == 401
    renewed = client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert renewed.status_code == 200
    access = renewed.json()["access_token"]
    assert (
        client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {access}"}).status_code
        == 200
    )


def test_wrong_password_and_unknown_user_get_the_same_answer(client: TestClient) -> None:
    wrong = login(client, password="nope")
    unknown = login(client, username="ghost", password="nope")
    assert wrong.status_code == unknown.status_code == 401  # type: ignore[attr-defined]
    assert wrong.json() == unknown.json()  # type: ignore[attr-defined]


def test_repeated_bad_logins_lock_the_account(client: TestClient) -> None:
    for _ in range(5):
        assert login(client, password="nope").status_code == 401  # type: ignore[attr-defined]
    # Locked now: even the right password is refused, with the same message.
    locked = login(client)
    assert locked.status_code == 401  # type: ignore[attr-defined]
    assert locked.json()["detail"] == "wrong username or password"  # type: ignore[attr-defined]


def test_cookie_session_needs_csrf_for_mutations(client: TestClient) -> None:
    assert login(client).status_code == 200  # type: ignore[attr-defined]
    # A safe request rides on the cookie alone.
    assert client.get("/api/v1/auth/me").status_code == 200
    # A mutating one without the CSRF header is refused and changes nothing.
    refused = client.post("/api/v1/auth/logout")
    assert refused.status_code == 403
    assert "X-CSRF-Token" in refused.json()["detail"]
    assert client.get("/api/v1/auth/me").status_code == 200
    # A foreign Origin is refused even with the header.
    csrf = client.cookies["konan_csrf"]
    foreign = client.post(
        "/api/v1/auth/logout", headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204


def test_logout_revokes_every_token_of_the_user(client: TestClient) -> None:
    first = login(client).json()["access_token"]  # type: ignore[attr-defined]
    second = login(client).json()["access_token"]  # type: ignore[attr-defined]
    client.cookies.clear()
    out = client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {first}"})
    assert out.status_code == 204
    for token in (first, second):
        response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
