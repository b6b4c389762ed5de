"""Security headers on every kind of response, the Secure session cookie, trusted proxies, and
tokens kept out of the logs."""

import logging
import uuid

import pytest

from pulse.settings import ConfigError
from tests.conftest import demo_server

from ..conftest import TOKEN, log_in


@pytest.mark.parametrize("path", ["/login", "/", "/tasks", "/api/tasks", "/healthz", "/no-such-page",
                                  "/static/js/common.js"])
def test_every_response_carries_the_security_headers(logged_in, path):
    client, _csrf = logged_in
    response = client.get(path)
    response.close()  # a static file's response holds the file open
    headers = response.headers
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "default-src 'self'" in policy and "object-src 'none'" in policy
    assert policy.endswith("frame-ancestors 'none'") and headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def make_app(redis_url, **env):
    return demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": redis_url, "PULSE_ASYNC_MODE": "threading",
                       "PULSE_REGISTRY_PREFIX": f"s{uuid.uuid4().hex[:10]}:", **env})


def cookie_flags(response) -> set[str]:
    return {part.strip() for part in response.headers["Set-Cookie"].split(";")}


FORWARDED_HTTPS = {"headers": {"X-Forwarded-Proto": "https"}}


@pytest.mark.parametrize(("env", "how", "secure"), [
    ({}, {}, False),  # plain HTTP
    ({}, {"base_url": "https://localhost"}, True),  # HTTPS straight to Pulse
    ({}, FORWARDED_HTTPS, False),  # anyone can send X-Forwarded-Proto: not believed by default
    ({"PULSE_PROXY_HOPS": "1"}, FORWARDED_HTTPS, True),  # ...but from the configured proxy
    ({"PULSE_PROXY_HOPS": "1"}, {}, False),  # the proxy forwarded plain HTTP
    ({"PULSE_SECURE_COOKIE": "true"}, {}, True),  # forced, for a TLS proxy Pulse does not trust
], ids=["http", "https", "forged-proto", "trusted-proxy-https", "trusted-proxy-http", "forced"])
def test_the_session_cookie_is_secure_behind_tls(redis_url, env, how, secure):
    client = make_app(redis_url, **env).test_client()
    response = log_in(client, TOKEN, **how)
    assert response.status_code == 302
    flags = cookie_flags(response)
    assert ("Secure" in flags) is secure
    assert {"HttpOnly", "SameSite=Lax"} <= flags
    with client.session_transaction(**how) as session:
        form = {"csrf_token": session["csrf"]}
    assert ("Secure" in cookie_flags(client.post("/logout", data=form, **how))) is secure  # the deletion too


def failed_logins_from(app, addresses: list[str]) -> list[int]:
    client = app.test_client()
    return [log_in(client, "wrong-token-0123456789", headers={"X-Forwarded-For": address}).status_code
            for address in addresses]


def test_a_forged_x_forwarded_for_does_not_dodge_the_login_throttle(redis_url):
    app = make_app(redis_url, PULSE_AUTH_ATTEMPTS="2")
    assert failed_logins_from(app, ["203.0.113.1", "203.0.113.2", "203.0.113.3"]) == [401, 401, 429]


def test_behind_a_trusted_proxy_the_client_is_the_forwarded_address(redis_url):
    app = make_app(redis_url, PULSE_AUTH_ATTEMPTS="2", PULSE_PROXY_HOPS="1")
    # The proxy appends the address it saw: the last hop is the one to believe.
    statuses = failed_logins_from(app, ["203.0.113.1", "203.0.113.1", "198.51.100.9, 203.0.113.1",
                                        "203.0.113.2"])
    assert statuses == [401, 401, 429, 401]
    launched = app.test_client().post("/api/tasks", json={"name": "tasks.demo.count", "kwargs": {"total": 1}},
                                      headers={"Authorization": f"Bearer {TOKEN}",
                                               "X-Forwarded-For": "203.0.113.5"})
    assert launched.status_code == 202
    assert app.extensions["pulse_audit"].read(1)[0]["who"] == "operator (token) from 203.0.113.5"


@pytest.mark.parametrize(("key", "value"), [("PULSE_PROXY_HOPS", "-1"), ("PULSE_PROXY_HOPS", "one"),
                                            ("PULSE_SECURE_COOKIE", "maybe")])
def test_transport_settings_are_checked(redis_url, key, value):
    with pytest.raises(ConfigError, match=f"{key}={value!r}"):
        make_app(redis_url, **{key: value})


def test_a_token_in_a_logged_url_is_blanked(app, caplog):
    caplog.set_level(logging.INFO, logger="werkzeug")
    # What Werkzeug's access log (threading mode) writes for the widget's polling fallback.
    logging.getLogger("werkzeug").info('127.0.0.1 - - [date] "%s" %s %s',
                                       "GET /api/tasks/a?token=eyJ0Ijoi.secret&wait=1 HTTP/1.1", "200", "-")
    assert "secret" not in caplog.text
    assert "GET /api/tasks/a?token=[redacted]&wait=1 HTTP/1.1" in caplog.text
