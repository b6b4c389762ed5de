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
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from pulse.server.http.sessions import fingerprint
from pulse.server.http.throttle import Throttled

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


def count_check(failed: bool) -> None:
    """Count a credential check for this client's address; raises Throttled past the limit."""
    metrics = current_app.extensions["pulse_metrics"].credentials
    try:
        current_app.extensions["pulse_auth_throttle"].check(request.remote_addr or "unknown", failed)
    except Throttled:
        metrics.labels("throttled").inc()
        raise
    if failed:
        metrics.labels("failed").inc()


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def bearer_role() -> str | None:
    """The role of this request's bearer token, checked (and counted) once per request."""
    if "pulse_bearer_role" not in g:
        role = role_for_token(bearer_token())
        count_check(failed=role is None)
        g.pulse_bearer_role = role
    return g.pulse_bearer_role


def _marks() -> dict[str, str]:
    """Each role's current credential, as the fingerprint sessions made from it carry."""
    config = current_app.config
    credentials = {OPERATOR: config["PULSE_TOKEN"], VIEWER: config["VIEWER_TOKEN"]}
    return {role: fingerprint(config["SECRET_KEY"], credential)
            for role, credential in credentials.items() if credential}


def session_role() -> str | None:
    """The role of this request's login session, while the session is good (``pulse.sessions``)."""
    if "pulse_session_role" not in g:
        session_id = session.get("sid")
        role = current_app.extensions["pulse_sessions"].role(session_id, _marks()) if session_id else None
        g.pulse_session_role = role
    return g.pulse_session_role


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
            role = bearer_role()
            if role is None:
                return _refusal(401, "invalid token: send Authorization: Bearer <PULSE_TOKEN>")
        else:
            role = session_role()
            if role is None:
                return _refusal(401, "authentication required: send Authorization: Bearer <PULSE_TOKEN>")
            if mutating and not _csrf_ok():
                return _refusal(403, "missing or wrong X-CSRF-Token header for this session")
        if mutating and role != OPERATOR:
            return _refusal(403, "read-only credentials: this action needs the operator token")
        return view(*args, **kwargs)

    return wrapped


def caller_role() -> str | None:
    """The caller's role: by its bearer token when it sends one, else by its session."""
    return bearer_role() if bearer_token() is not None else session_role()


def actor() -> str:
    """Who is acting, for the audit log: the role, how it authenticated, and from where."""
    how = "token" if bearer_token() is not None else "session"
    return f"{caller_role()} ({how}) from {request.remote_addr}"


def page_access(view: Callable) -> Callable:
    """Send visitors without a session to the login page."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if session_role() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def _csrf_ok(key: str = "csrf") -> bool:
    """The session's CSRF token came with the request: the API's header, or a page form's field
    (only the field for the login form's token)."""
    expected = session.get(key)
    header = request.headers.get("X-CSRF-Token") if key == "csrf" else None
    sent = header or request.form.get("csrf_token", "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def _safe_next(target: str | None) -> str:
    # Only same-site paths: "//host" or "http://..." would make login an open redirect, and
    # browsers read "\\" as "/" and drop tabs and newlines, so "/\\host" is "//host" to them.
    if (target and target.startswith("/") and not target.startswith("//")
            and not UNSAFE_IN_NEXT.search(target)):
        return target
    return url_for("pages.dashboard")


def _login_form(message: str | None = None, status: int = 200, headers: dict | None = None) -> Any:
    # The form's CSRF token lives in the (not yet logged in) session cookie: without it another
    # site could log a visitor in to a session of its choosing (login CSRF).
    if not session.get("login_csrf"):
        session["login_csrf"] = secrets.token_urlsafe(32)
    if message:
        flash(message)
    return render_template("login.html", login_csrf=session["login_csrf"]), status, headers or {}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method != "POST":  # GET, and HEAD as GET
        return _login_form()
    if not _csrf_ok("login_csrf"):
        return _login_form("The login form expired or came from another site: log in again.", 400)
    role = role_for_token(request.form.get("token", ""))
    try:
        count_check(failed=role is None)
    except Throttled as exc:
        return _login_form(f"Too many failed attempts from your address: try again in {exc.retry_after} s.",
                           429, {"Retry-After": str(exc.retry_after)})
    if role is None:
        return _login_form("That token is not valid. Use the PULSE_TOKEN printed by `make run`.", 401)
    config = current_app.config
    credential = config["PULSE_TOKEN"] if role == OPERATOR else config["VIEWER_TOKEN"]
    mark = fingerprint(config["SECRET_KEY"], credential)
    session_id = current_app.extensions["pulse_sessions"].open(role, mark)
    session.clear()
    # The cookie names the session only: its role is in the record, where logout can end it.
    session.update(sid=session_id, csrf=secrets.token_urlsafe(32))
    return redirect(_safe_next(request.args.get("next")))


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    # Without the check any site could log an operator out (a forged form, sent with the cookie
    # by browsers that do not default to SameSite=Lax). Without a session there is nothing to end.
    if session_role() is not None and not _csrf_ok():
        return _refusal(403, "missing or wrong csrf_token for this session: log out from a Pulse page")
    if session.get("sid"):  # ended on every server, not only forgotten by this browser
        current_app.extensions["pulse_sessions"].end(session["sid"])
    session.clear()
    return redirect(url_for("auth.login"))


def throttled(exc: Throttled) -> Any:
    """A credential check refused past the limit (API, metrics, per-task tokens)."""
    return {"error": str(exc)}, 429, {"Retry-After": str(exc.retry_after)}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_error_handler(Throttled, throttled)
    # The cookie's signature expires with the session's record.
    app.permanent_session_lifetime = timedelta(seconds=app.config["SESSION_LIFETIME"])

    @app.context_processor
    def _session_context() -> dict[str, Any]:
        role = session_role()
        csrf = session.get("csrf", "") if role else ""
        return {"csrf_token": csrf, "role": role, "can_act": role == OPERATOR}
