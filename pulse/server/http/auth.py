"""Who may do what: the operator and viewer tokens, the login session, and the checks views use.

The operator (``PULSE_TOKEN``) may do everything; a viewer (``PULSE_VIEWER_TOKEN``) may read
everything and change nothing. The API takes ``Authorization: Bearer <token>``; the browser logs
in once and then carries a session cookie, with a CSRF token required on every mutating request.
Tokens are compared in constant time and never logged (``pulse.security`` blanks them in URLs).
"""

import hmac
import re
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

OPERATOR = "operator"
VIEWER = "viewer"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNSAFE_IN_NEXT = re.compile(r"[\\\x00-\x1f\x7f]")  # a backslash or a control character

bp = Blueprint("auth", __name__)


def role_for_token(token: Any) -> str | None:
    """The role a token grants, compared in constant time; None for a wrong or missing token."""
    if not isinstance(token, str) or not token:
        return None
    given = token.encode()
    # Both comparisons always run, so timing does not tell which token came close.
    operator = hmac.compare_digest(given, current_app.config["PULSE_TOKEN"].encode())
    viewer_token = current_app.config["VIEWER_TOKEN"]
    viewer = bool(viewer_token) and hmac.compare_digest(given, (viewer_token or "").encode())
    return OPERATOR if operator else VIEWER if viewer else None


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _refusal(status: int, message: str) -> tuple[dict[str, str], int]:
    return {"error": message}, status


def api_access(view: Callable) -> Callable:
    """Let a reader through on safe methods and only the operator on mutations, by bearer token,
    or by session plus a CSRF token on mutations."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = bearer_token()
        mutating = request.method not in SAFE_METHODS
        if token is not None:
            role = role_for_token(token)
            if role is None:
                return _refusal(401, "invalid token: send Authorization: Bearer <PULSE_TOKEN>")
        else:
            role = session.get("role")
            if role is None:
                return _refusal(401, "authentication required: send Authorization: Bearer <PULSE_TOKEN>")
            if mutating and not _csrf_ok():
                return _refusal(403, "missing or wrong X-CSRF-Token header for this session")
        if mutating and role != OPERATOR:
            return _refusal(403, "read-only credentials: this action needs the operator token")
        return view(*args, **kwargs)

    return wrapped


def actor() -> str:
    """Who is acting, for the audit log: the role, how it authenticated, and from where."""
    token = bearer_token()
    role = role_for_token(token) if token is not None else session.get("role")
    how = "token" if token is not None else "session"
    return f"{role} ({how}) from {request.remote_addr}"


def page_access(view: Callable) -> Callable:
    """Send visitors without a session to the login page."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if session.get("role") is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def _csrf_ok() -> bool:
    """The session's CSRF token came with the request: the API's header, or a page form's field."""
    expected = session.get("csrf")
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def _safe_next(target: str | None) -> str:
    # Only same-site paths: "//host" or "http://..." would make login an open redirect, and
    # browsers read "\\" as "/" and drop tabs and newlines, so "/\\host" is "//host" to them.
    if (target and target.startswith("/") and not target.startswith("//")
            and not UNSAFE_IN_NEXT.search(target)):
        return target
    return url_for("pages.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        throttle = current_app.extensions["pulse_login_throttle"]
        address = request.remote_addr or "unknown"
        wait = throttle.retry_after(address)
        if wait is not None:
            flash(f"Too many failed attempts from your address: try again in {wait} s.")
            return render_template("login.html"), 429, {"Retry-After": str(wait)}
        role = role_for_token(request.form.get("token", ""))
        if role is None:
            throttle.failed(address)
        else:
            session.clear()
            session.update(role=role, csrf=secrets.token_urlsafe(32))
            return redirect(_safe_next(request.args.get("next")))
        flash("That token is not valid. Use the PULSE_TOKEN printed by `make run`.")
        return render_template("login.html"), 401
    return render_template("login.html")


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    # Without the check any site could log an operator out (a forged form, sent with the cookie
    # by browsers that do not default to SameSite=Lax). Without a session there is nothing to end.
    if session.get("role") is not None and not _csrf_ok():
        return _refusal(403, "missing or wrong csrf_token for this session: log out from a Pulse page")
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def _session_context() -> dict[str, Any]:
        role = session.get("role")
        return {"csrf_token": session.get("csrf", ""), "role": role, "can_act": role == OPERATOR}
