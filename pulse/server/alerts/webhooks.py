"""The bodies a webhook receives (plain JSON, or Slack's incoming-webhook shape) and the POST itself."""

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from pulse.server.alerts.conditions import FIRING_NOTICE, RESOLVED_NOTICE

USER_AGENT = "pulse-alerts"
ANSWER_SHOWN = 200  # characters of a refusing receiver's answer kept in the history
COLOURS = {FIRING_NOTICE: "danger", RESOLVED_NOTICE: "good"}  # a test notice: Slack's blue
RETRIED = {408, 425, 429}  # and every 5xx: the receiver may take it later; other 4xx will not change


def body(notice: dict[str, Any], fmt: str) -> bytes:
    if fmt == "slack":
        return json.dumps(slack(notice)).encode()
    return json.dumps({"source": "pulse", **notice}).encode()


def _slack_text(text: Any) -> str:
    # Slack reads <...> as links and mentions: a task name or detail must show as it is.
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(notice: dict[str, Any]) -> dict[str, Any]:
    """A body Slack's incoming webhooks (and Mattermost, Rocket.Chat...) accept: ``text`` for the
    notification, an attachment coloured by status for the detail."""
    rule = notice["rule"]
    headline = f"{notice['status'].upper()}: {_slack_text(rule['name'])}"
    target = rule.get("task") or rule.get("queue") or rule.get("entry")
    fields = [{"title": "Condition", "value": _slack_text(rule["kind"]), "short": True}]
    if target:
        fields.append({"title": "On", "value": _slack_text(target), "short": True})
    return {
        "text": f"{headline}: {_slack_text(notice['detail'])}",
        "attachments": [{
            "color": COLOURS.get(notice["status"], "#439FE0"), "title": headline,
            "text": _slack_text(notice["detail"]),
            "fields": fields, "footer": f"Pulse alert {_slack_text(notice['id'])}", "ts": int(notice["at"]),
        }],
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A POST that is redirected becomes a GET without its body: say so rather than lose the notice.
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post(url: str, payload: bytes, timeout: float) -> tuple[int | None, str | None, bool]:
    """POST ``payload``; returns (HTTP status or None, error or None, whether to try again)."""
    request = urllib.request.Request(url, data=payload, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT})
    try:
        with _opener.open(request, timeout=timeout) as answer:
            return answer.status, None, False
    except urllib.error.HTTPError as exc:
        said = exc.read(ANSWER_SHOWN).decode("utf-8", "replace") if exc.fp else ""
        if 300 <= exc.code < 400:
            return exc.code, f"answered a redirect ({exc.code}) to {exc.headers.get('Location')!r}: " \
                             "set the webhook to the final URL", False
        retry = exc.code in RETRIED or exc.code >= 500
        return exc.code, f"answered {exc.code}" + (f": {said}" if said else ""), retry
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(reason).__name__}: {reason}"[:ANSWER_SHOWN], True
