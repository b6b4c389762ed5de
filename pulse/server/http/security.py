"""Security headers on every response, and how Pulse tells a request came over TLS.

A Content-Security-Policy that allows no inline script or style and nothing from another origin
(every script and stylesheet is a file under /static), frame protection everywhere except the
embed route (which the configured origins may frame), no MIME sniffing, and no Referer: pages
may carry a per-task token in their URL.

The session cookie is Secure on every request that came over HTTPS, or always with
PULSE_SECURE_COOKIE. Behind a TLS-terminating proxy the scheme is the proxy's to tell, and Pulse
believes its X-Forwarded-* headers only when PULSE_PROXY_HOPS says how many proxies there are.
"""

import logging
import re

from flask import Flask, Response, current_app, has_request_context, request
from flask.sessions import SecureCookieSessionInterface

POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'")
# Every answer carries these, Socket.IO's own too (pulse/server/http/socket_guard.py).
EVERYWHERE = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
              ("Cross-Origin-Opener-Policy", "same-origin"))
EMBED_ENDPOINT = "embed.embed"
TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"']+")


def add_headers(response: Response) -> Response:
    if request.endpoint == EMBED_ENDPOINT:
        ancestors = " ".join(("'self'", *current_app.config["EMBED_ORIGINS"]))
    else:
        ancestors = "'none'"
        response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = f"{POLICY}; frame-ancestors {ancestors}"
    response.headers.update(EVERYWHERE)
    return response


class TlsAwareSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session, its cookie Secure when the request came over HTTPS.

    Flask's SESSION_COOKIE_SECURE (PULSE_SECURE_COOKIE) is one answer for every request; a server
    reached both over plain HTTP on loopback and over HTTPS needs the request's own.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


class RedactTokens(logging.Filter):
    """Blank ``?token=`` in log lines: Werkzeug's access log (threading mode) prints whole URLs,
    and the widget's polling fallback carries its per-task token there."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = TOKEN_IN_URL.sub(r"\1[redacted]", message), ()
        return True


def redact_tokens(logger: logging.Logger) -> None:
    if not any(isinstance(existing, RedactTokens) for existing in logger.filters):
        logger.addFilter(RedactTokens())


def init_app(app: Flask) -> None:
    app.after_request(add_headers)
    app.session_interface = TlsAwareSessions()
    redact_tokens(logging.getLogger("werkzeug"))
