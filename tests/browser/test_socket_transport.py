"""The pages' live connection is a WebSocket and nothing else: no long-polling fallback, whose
handshake (a same-origin GET) carries no Origin, and which would need sticky sessions."""

import json

from playwright.sync_api import expect

from .conftest import TIMEOUT_MS, log_in

# Records the options of every io(...) call the page makes, around the vendored client (as JSON:
# the client replaces the transport names in them with its transport classes).
RECORD_IO = """
(() => {
  let real;
  window.pulseIoOptions = [];
  Object.defineProperty(window, 'io', {
    configurable: true,
    set(value) { real = value; },
    get() {
      return real && ((...args) => {
        window.pulseIoOptions.push(JSON.stringify(args[args.length - 1]));
        return real(...args);
      });
    },
  });
})();
"""


def test_the_dashboard_opens_a_websocket_and_never_polls(page, stack, js_errors):
    polls, sockets = [], []
    page.on("request", lambda request: "/socket.io/" in request.url and polls.append(request.url))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.add_init_script(RECORD_IO)
    log_in(page, stack)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=TIMEOUT_MS)
    options = [json.loads(recorded) for recorded in page.evaluate("window.pulseIoOptions")]
    assert [call.get("transports") for call in options] == [["websocket"]]
    assert polls == []
    assert len(sockets) == 1 and "transport=websocket" in sockets[0]
    assert js_errors.script_errors() == []
