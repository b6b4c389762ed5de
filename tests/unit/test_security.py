"""Security headers on every kind of response."""

import pytest


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
