"""Security headers on every response.

A Content-Security-Policy that allows no inline script or style and nothing from another origin
(every script and stylesheet is a file under /static), frame protection everywhere except the
embed route (which the configured origins may frame), no MIME sniffing, and no Referer: pages
may carry a per-task token in their URL.
"""

from flask import Flask, Response, current_app, request

POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'")
EMBED_ENDPOINT = "embed.embed"


def add_headers(response: Response) -> Response:
    if request.endpoint == EMBED_ENDPOINT:
        ancestors = " ".join(("'self'", *current_app.config["EMBED_ORIGINS"]))
    else:
        ancestors = "'none'"
        response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = f"{POLICY}; frame-ancestors {ancestors}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_headers)
