// Pulse's embeddable progress widget: <pulse-progress task="ID" token="TOKEN"></pulse-progress>
// (or group="ID"). One classic script, included from any origin with one script tag:
//
//   <script src="https://pulse.example/widget.js"></script>
//
// The Pulse server is where this script came from. The widget loads the Socket.IO client from
// that server (once per page), subscribes with its read-only task (or group) token, and falls
// back to polling the REST API every second when WebSockets are blocked. It draws in a shadow
// root; task data reaches the DOM through textContent and attributes only, never as HTML.
//
// Theming: the CSS custom properties --pulse-bar-color, --pulse-track-color,
// --pulse-success-color, --pulse-failure-color, --pulse-text-color, --pulse-font,
// --pulse-bar-height and --pulse-radius, and the parts bar, fill, label, message, eta, status,
// details, cancel (plus error, members, member, member-name, member-bar, member-fill).
// Text: every label-* attribute (label-running, label-success, ...) replaces a default text;
// label="..." names the bar for assistive technology; server="https://..." overrides the server
// (for a widget.js loaded by a module bundler, where the script's own address is unknown).
// State for styling and tests: data-status (the task's status) and data-connection (connecting,
// live, polling, error, ended) on the element; data-followed when it follows a replay.
// Events on the element (bubbling, composed): pulse-progress on every update, pulse-success and
// pulse-failure once each (pulse-failure for any end without success: failed, lost, abandoned,
// skipped, revoked; once more for the new run if an operator replays the task); event.detail is
// the task (or group) JSON, also kept in element.state.
(function () {
  'use strict';

  if (window.customElements == null || window.customElements.get('pulse-progress')) return;

  const SCRIPT = document.currentScript;
  const SCRIPT_URL = SCRIPT && SCRIPT.src ? SCRIPT.src : null;
  const SOCKET_IO_PATH = 'static/vendor/socket.io-4.8.1.min.js';
  const SOCKET_GRACE_MS = 4000;  // no live subscription by then: poll instead
  const POLL_MS = 1000;
  const POLL_IDLE_MS = 5000;     // a failed or lost task may still be replayed by an operator
  const POLL_MAX_BACKOFF_MS = 10000;

  const DEFAULT_LABELS = {
    waiting: 'Waiting',
    running: 'Running',
    retrying: 'Retrying',
    success: 'Done',
    failure: 'Failed',
    revoked: 'Cancelled',
    cancel: 'Cancel',
    'cancel-requested': 'Cancel requested',
    'cancel-failed': 'Could not cancel',
    eta: 'about {time} left',
    progress: 'Progress',
    abandoned: 'Not run: an earlier step failed',
    lost: 'Lost',
    skipped: 'Skipped',
    expired: 'Expired',
    replayed: 'Replayed',
    error: 'Cannot reach the progress server',
    denied: 'Access to this task was refused',
    members: '{done} of {total} done',
  };

  const FAILED = new Set(['failed', 'lost', 'abandoned', 'skipped']);
  const ENDED = new Set(['finished', 'revoked', 'abandoned', 'skipped', 'expired']);
  const ACTIVE = new Set(['running', 'retrying']);

  const STYLE = `
:host { display: block; font: var(--pulse-font, inherit); color: var(--pulse-text-color, inherit); }
:host([hidden]) { display: none; }
.root { display: grid; gap: 0.35em; }
.head, .line { display: flex; gap: 0.75em; align-items: baseline; flex-wrap: wrap; }
.status { font-weight: 600; }
.status:focus { outline: none; }
.label { margin-inline-start: auto; font-variant-numeric: tabular-nums; }
.bar {
  position: relative; overflow: hidden; height: var(--pulse-bar-height, 0.6em);
  border-radius: var(--pulse-radius, 999px); background: var(--pulse-track-color, rgba(127, 127, 127, 0.25));
}
.fill {
  height: 100%; width: 0; border-radius: inherit; background: var(--pulse-bar-color, #2563eb);
  transition: width 0.2s ease-out;
}
.root[data-outcome="success"] > .bar > .fill { background: var(--pulse-success-color, #15803d); }
.root[data-outcome="failure"] > .bar > .fill { background: var(--pulse-failure-color, #b91c1c); }
.root[data-outcome="failure"] > .head > .status { color: var(--pulse-failure-color, #b91c1c); }
.root[data-outcome="success"] > .head > .status { color: var(--pulse-success-color, #15803d); }
.bar.indeterminate > .fill { width: 30%; animation: pulse-slide 1.2s ease-in-out infinite; }
@keyframes pulse-slide { from { transform: translateX(-100%); } to { transform: translateX(340%); } }
@media (prefers-reduced-motion: reduce) {
  .fill { transition: none; }
  .bar.indeterminate > .fill { animation: none; width: 100%; opacity: 0.5; }
}
.message { overflow-wrap: anywhere; }
.eta { opacity: 0.8; font-size: 0.9em; }
.details { margin: 0; padding-inline-start: 1.2em; font-size: 0.9em; }
.details .key { font-weight: 600; }
.details .value { overflow-wrap: anywhere; white-space: pre-wrap; }
.error { color: var(--pulse-failure-color, #b91c1c); font-size: 0.9em; }
.members {
  list-style: none; margin: 0.25em 0 0; padding: 0; display: grid; gap: 0.25em 0.5em; font-size: 0.85em;
  grid-template-columns: minmax(6em, max-content) 1fr max-content;
}
.member { display: grid; grid-column: 1 / -1; grid-template-columns: subgrid; align-items: center; }
.member-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.member .bar { height: calc(var(--pulse-bar-height, 0.6em) * 0.6); }
.member[data-outcome="success"] .fill { background: var(--pulse-success-color, #15803d); }
.member[data-outcome="failure"] .fill { background: var(--pulse-failure-color, #b91c1c); }
.member[data-outcome="failure"] .member-status { color: var(--pulse-failure-color, #b91c1c); }
.cancel { justify-self: start; font: inherit; cursor: pointer; }
.cancel:focus-visible { outline: 2px solid var(--pulse-bar-color, #2563eb); outline-offset: 2px; }
[hidden] { display: none !important; }
`;

  // --- where the server is, and its Socket.IO client, loaded once per page -------------------

  function serverBase(element) {
    const explicit = element.getAttribute('server');
    const href = explicit || SCRIPT_URL;
    if (!href) return null;
    try {
      const url = new URL(href, document.baseURI);
      if (explicit) return new URL(url.pathname.endsWith('/') ? url.href : url.href + '/');
      return new URL('./', url);  // the folder widget.js was served from
    } catch (error) {
      return null;
    }
  }

  let ioPromise = null;
  function loadSocketIo(base) {
    if (typeof window.io === 'function') return Promise.resolve(window.io);
    if (ioPromise) return ioPromise;
    ioPromise = new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = new URL(SOCKET_IO_PATH, base).href;
      script.async = true;
      script.addEventListener('load', () => {
        if (typeof window.io === 'function') resolve(window.io);
        else reject(new Error('the Socket.IO client did not define window.io'));
      });
      script.addEventListener('error', () => reject(new Error('the Socket.IO client did not load')));
      (document.head || document.documentElement).append(script);
    });
    ioPromise.catch(() => { ioPromise = null; });  // a later widget may try again
    return ioPromise;
  }

  // --- small DOM helpers (text only) -------------------------------------------------------

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value != null) node.setAttribute(name, String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function setText(node, text) {
    const value = text == null ? '' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function show(node, visible) {
    if (node.hidden === visible) node.hidden = !visible;
  }

  function asText(value) {
    if (value == null) return '';
    if (typeof value === 'string') return value;
    try {
      return JSON.stringify(value);
    } catch (error) {
      return String(value);
    }
  }

  function formatDuration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const minutes = Math.floor(s / 60);
    if (minutes < 60) return `${minutes} min ${s % 60} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function percentOf(data) {
    const progress = data && data.progress;
    if (progress && typeof progress.percent === 'number' && isFinite(progress.percent)) {
      return Math.min(100, Math.max(0, progress.percent));
    }
    return data && data.status === 'finished' ? 100 : null;
  }

  // 'about {time} left' with {time: '12 s'}: placeholders replaced as plain text.
  function format(template, values) {
    let text = template;
    for (const [key, value] of Object.entries(values)) text = text.split(`{${key}}`).join(String(value));
    return text;
  }

  function formatPercent(percent) {
    return `${Math.round(percent * 10) / 10}%`;
  }

  function outcomeOf(status) {
    if (status === 'finished') return 'success';
    if (FAILED.has(status)) return 'failure';
    if (status === 'revoked') return 'revoked';
    return '';
  }

  function makeStyle(root) {
    // A constructed stylesheet also works under a page CSP without 'unsafe-inline'.
    if ('adoptedStyleSheets' in root && typeof CSSStyleSheet === 'function') {
      try {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(STYLE);
        root.adoptedStyleSheets = [sheet];
        return;
      } catch (error) {
        // fall through to a <style> element
      }
    }
    const style = document.createElement('style');
    style.textContent = STYLE;
    root.append(style);
  }

  // --- the element ---------------------------------------------------------------------------

  class PulseProgress extends HTMLElement {
    static get observedAttributes() {
      return ['task', 'group', 'token', 'server'];
    }

    constructor() {
      super();
      this._state = null;
      this._session = 0;     // bumps on every (re)start; late answers of older sessions are dropped
      this._socket = null;
      this._pollTimer = 0;
      this._graceTimer = 0;
      this._restartTimer = 0;
      this._fired = new Set();
      this._cancelRequested = false;
      this._build();
    }

    get state() {
      return this._state;
    }

    connectedCallback() {
      this._start();
    }

    disconnectedCallback() {
      this._stop();
    }

    attributeChangedCallback(name, oldValue, newValue) {
      if (oldValue === newValue || !this.isConnected) return;
      // Coalesce several attribute changes made together into one restart.
      clearTimeout(this._restartTimer);
      this._restartTimer = setTimeout(() => this._start(), 0);
    }

    _label(key) {
      const value = this.getAttribute(`label-${key}`);
      return value != null ? value : DEFAULT_LABELS[key];
    }

    _build() {
      const root = this.attachShadow({mode: 'open'});
      makeStyle(root);
      this._status = el('span', {class: 'status', part: 'status', role: 'status', 'aria-live': 'polite',
        tabindex: '-1'});
      this._percent = el('span', {class: 'label', part: 'label', 'aria-hidden': 'true'});
      this._fill = el('div', {class: 'fill', part: 'fill'});
      this._bar = el('div', {class: 'bar', part: 'bar', role: 'progressbar', 'aria-valuemin': 0,
        'aria-valuemax': 100}, [this._fill]);
      this._message = el('span', {class: 'message', part: 'message'});
      this._eta = el('span', {class: 'eta', part: 'eta'});
      this._details = el('ul', {class: 'details', part: 'details', hidden: ''});
      this._members = el('ol', {class: 'members', part: 'members', hidden: ''});
      this._error = el('div', {class: 'error', part: 'error', role: 'alert', hidden: ''});
      this._cancel = el('button', {type: 'button', class: 'cancel', part: 'cancel', hidden: ''});
      this._cancel.addEventListener('click', () => this._requestCancel());
      this._root = el('div', {class: 'root', part: 'root'}, [
        el('div', {class: 'head'}, [this._status, this._percent]),
        this._bar,
        el('div', {class: 'line'}, [this._message, this._eta]),
        this._details, this._members, this._error, this._cancel,
      ]);
      root.append(this._root);
    }

    // --- lifecycle -----------------------------------------------------------------------

    _target() {
      const group = this.getAttribute('group');
      if (group) return {kind: 'group', id: group};
      const task = this.getAttribute('task');
      return task ? {kind: 'task', id: task} : null;
    }

    _start() {
      this._stop();
      const session = ++this._session;
      this._current = this._target();
      this._token = this.getAttribute('token') || '';
      this._base = serverBase(this);
      this._state = null;
      this._fired = new Set();
      this._cancelRequested = false;
      this._followed = new Set();
      this._pollFailures = 0;
      delete this.dataset.followed;
      this._showError(null);
      this._renderWaiting();
      if (!this._current || !this._base) {
        this._showError(this._base ? 'missing task or group attribute' : 'unknown Pulse server', true);
        return;
      }
      this._setMode('connecting');
      this._graceTimer = setTimeout(() => {
        if (session === this._session && !this._subscribed) this._fallBack('no live connection in time');
      }, SOCKET_GRACE_MS);
      loadSocketIo(this._base).then(
        (io) => { if (session === this._session) this._connect(io, session); },
        () => { if (session === this._session) this._fallBack('Socket.IO client unavailable'); },
      );
    }

    _stop() {
      this._session++;
      this._subscribed = false;
      clearTimeout(this._graceTimer);
      clearTimeout(this._pollTimer);
      clearTimeout(this._restartTimer);
      this._closeSocket();
    }

    _closeSocket() {
      const socket = this._socket;
      if (!socket) return;
      this._socket = null;
      socket.removeAllListeners();
      socket.io.off('close', this._onTransportClose);
      if (socket.io.engine) socket.io.engine.off('close', this._onTransportClose);
      socket.close();
    }

    _setMode(mode) {
      this.dataset.connection = mode;  // connecting, live, polling, error, ended
    }

    // --- the live path -------------------------------------------------------------------

    _connect(io, session) {
      const socket = io(this._base.origin, {
        path: `${this._base.pathname}socket.io`,
        transports: ['websocket'],
        auth: {token: this._token},
        forceNew: true,
        timeout: SOCKET_GRACE_MS,
        reconnectionAttempts: 5,
      });
      this._socket = socket;
      socket.on('connect', () => this._subscribe(session));
      socket.on('connect_error', () => {
        if (session === this._session) this._fallBack('live connection refused or blocked');
      });
      // A proxy that accepts the WebSocket and closes it at once gives no connect_error (the
      // client would wait for its connect timeout): before the first subscription, poll.
      this._onTransportClose = () => {
        if (session === this._session && !this._subscribed) this._fallBack('live connection closed');
      };
      if (socket.io.engine) socket.io.engine.on('close', this._onTransportClose);
      socket.io.on('close', this._onTransportClose);
      socket.on('disconnect', (reason) => {
        if (session !== this._session) return;
        this._subscribed = false;
        // The client reconnects by itself after a network drop, not after the server hung up.
        if (reason === 'io server disconnect') this._fallBack('the server closed the live connection');
      });
      const onPush = (kind) => (data) => {
        const current = this._current;
        if (session !== this._session || current.kind !== kind || !data || data.id !== current.id) return;
        this._update(data);
      };
      socket.on('task', onPush('task'));
      socket.on('group', onPush('group'));
    }

    _subscribe(session) {
      const socket = this._socket;
      if (!socket || session !== this._session) return;
      const payload = {[this._current.kind]: this._current.id};
      socket.timeout(SOCKET_GRACE_MS).emit('subscribe', payload, (error, ack) => {
        if (session !== this._session || socket !== this._socket) return;
        if (error || !ack || ack.error || !ack[this._current.kind]) {
          this._fallBack(error ? 'no answer to subscribe' : 'subscription refused');
          return;
        }
        this._subscribed = true;
        clearTimeout(this._graceTimer);
        this._setMode('live');
        this._update(ack[this._current.kind]);
      });
    }

    // --- the polling path ----------------------------------------------------------------

    _fallBack(reason) {
      if (this.dataset.connection === 'polling' || this.dataset.connection === 'ended') return;
      const session = this._session;
      clearTimeout(this._graceTimer);
      this._subscribed = false;
      this._setMode('polling');
      this._fallbackReason = reason;
      this._closeSocket();
      this._poll(session);
    }

    _apiUrl(kind, id) {
      const path = kind === 'group' ? 'api/groups/' : 'api/tasks/';
      const url = new URL(path + encodeURIComponent(id), this._base);
      url.searchParams.set('token', this._token);
      return url.href;
    }

    async _poll(session) {
      const {kind, id} = this._current;
      let delay = POLL_MS;
      try {
        const response = await fetch(this._apiUrl(kind, id), {
          headers: {Accept: 'application/json'}, credentials: 'omit', cache: 'no-store', mode: 'cors',
        });
        if (session !== this._session) return;
        if (response.status === 401 || response.status === 403) {
          const body = await response.json().catch(() => ({}));
          const denied = this._label('denied');
          this._showError(body && body.error ? `${denied} (${body.error})` : denied, true);
          this._setMode('error');
          return;
        }
        if (response.status === 404) {
          this._renderWaiting();  // not recorded yet: keep asking
        } else if (!response.ok) {
          throw new Error(`HTTP ${response.status}`);
        } else {
          const data = await response.json();
          if (session !== this._session) return;
          this._pollFailures = 0;
          this._showError(null);
          if (this._current.kind === kind && this._current.id === id) this._update(data);
          if (this.dataset.connection === 'ended') return;
          if (FAILED.has(data.status)) delay = POLL_IDLE_MS;
        }
      } catch (error) {
        if (session !== this._session) return;
        this._pollFailures += 1;
        this._showError(this._label('error'));
        delay = Math.min(POLL_MAX_BACKOFF_MS, POLL_MS * 2 ** Math.min(this._pollFailures, 4));
      }
      if (session === this._session) this._pollTimer = setTimeout(() => this._poll(session), delay);
    }

    // --- updates -------------------------------------------------------------------------

    _update(data) {
      if (!data || typeof data !== 'object') return;
      const last = this._state;
      if (last && last.id === data.id) {
        // An older copy (the cancel call's answer) that lost the race with a push is dropped.
        if (ENDED.has(last.status) && !ENDED.has(data.status)) return;
        if (data.updated_at != null && last.updated_at != null && data.updated_at < last.updated_at) return;
      }
      if (this._current.kind === 'task' && data.status === 'replayed' && data.replayed_by &&
          !this._followed.has(data.id)) {
        this._state = data;
        this._render(data);
        this._dispatch('pulse-progress', data);
        this._follow(data.replayed_by);
        return;
      }
      this._state = data;
      this._render(data);
      this._dispatch('pulse-progress', data);
      const outcome = outcomeOf(data.status);
      if (outcome === 'success') this._once('pulse-success', data);
      if (outcome === 'failure' || outcome === 'revoked') this._once('pulse-failure', data);
      if (ENDED.has(data.status)) this._end();
    }

    _follow(nextId) {
      // The operator replayed the task: watch the new run with the same token.
      const previous = this._current.id;
      this._followed.add(previous);
      this._current = {kind: 'task', id: nextId};
      this._cancelRequested = false;
      this._fired.delete('pulse-failure');
      this.dataset.followed = nextId;
      if (this._socket && this._subscribed) {
        this._socket.emit('unsubscribe', {task: previous});
        this._subscribe(this._session);
      }
      // The polling loop reads this._current on its next round.
    }

    _end() {
      this._setMode('ended');
      clearTimeout(this._graceTimer);
      clearTimeout(this._pollTimer);
      this._closeSocket();
      show(this._cancel, false);
    }

    _once(type, data) {
      if (this._fired.has(type)) return;
      this._fired.add(type);
      this._dispatch(type, data);
    }

    _dispatch(type, data) {
      this.dispatchEvent(new CustomEvent(type, {detail: data, bubbles: true, composed: true}));
    }

    // --- drawing -------------------------------------------------------------------------

    _renderWaiting() {
      this._root.dataset.status = 'waiting';
      this._root.dataset.outcome = '';
      setText(this._status, this._label('waiting'));
      setText(this._percent, '');
      setText(this._message, '');
      setText(this._eta, '');
      this._bar.removeAttribute('aria-valuenow');
      this._bar.setAttribute('aria-valuetext', this._label('waiting'));
      this._bar.setAttribute('aria-label', this.getAttribute('label') || this._label('progress'));
      this._fill.style.width = '0%';
      show(this._details, false);
      show(this._members, false);
      show(this._cancel, false);
    }

    _statusText(data) {
      const status = data.status;
      if (status === 'finished') return this._label('success');
      if (status === 'failed') return this._label('failure');
      if (status === 'revoked') return this._label('revoked');
      if ((data.revoke_requested_at || this._cancelRequested) && !ENDED.has(status)) {
        return this._label('cancel-requested');
      }
      if (status === 'retrying') {
        return data.retries ? `${this._label('retrying')} (${data.retries})` : this._label('retrying');
      }
      if (status === 'running') return this._label('running');
      if (DEFAULT_LABELS[status] !== undefined) return this._label(status);
      return this._label('waiting');  // unknown, unstarted, scheduled
    }

    _render(data) {
      const status = String(data.status || 'unknown');
      const outcome = outcomeOf(status);
      this._root.dataset.status = status;
      this._root.dataset.outcome = outcome;
      this.dataset.status = status;
      setText(this._status, this._statusText(data));

      const percent = percentOf(data);
      const progress = data.progress || {};
      const failure = this._failureOf(data);
      let message = progress.message || '';
      if (failure && failure.exc_message) message = failure.exc_message;
      else if (Array.isArray(data.members)) message = this._membersText(data);
      this._renderBar(this._bar, this._fill, percent, message, status,
        this._barLabel(data));
      setText(this._percent, percent == null ? '' : formatPercent(percent));
      setText(this._message, message);

      const eta = ACTIVE.has(status) && typeof progress.eta_seconds === 'number' ? progress.eta_seconds : null;
      setText(this._eta, eta == null ? '' : format(this._label('eta'), {time: formatDuration(eta)}));

      this._renderDetails(failure);
      this._renderMembers(data);
      const cancellable = this._current.kind === 'task' && data.can_cancel === true &&
        !data.revoke_requested_at && !this._cancelRequested && !ENDED.has(status);
      setText(this._cancel, this._label('cancel'));
      if (cancellable) this._cancel.disabled = false;
      show(this._cancel, cancellable);
    }

    _barLabel(data) {
      const own = this.getAttribute('label');
      if (own) return own;
      return data.name ? `${this._label('progress')}: ${data.name}` : this._label('progress');
    }

    _renderBar(bar, fill, percent, message, status, label) {
      bar.setAttribute('aria-label', label);
      bar.classList.toggle('indeterminate', percent == null && ACTIVE.has(status));
      if (percent == null) {
        bar.removeAttribute('aria-valuenow');
        bar.setAttribute('aria-valuetext', message || status);
        fill.style.width = '0%';
        if (ACTIVE.has(status)) fill.style.removeProperty('width');
        return;
      }
      bar.setAttribute('aria-valuenow', String(Math.round(percent)));
      const text = formatPercent(percent);
      bar.setAttribute('aria-valuetext', message ? `${text} — ${message}` : text);
      fill.style.width = `${percent}%`;
    }

    _failureOf(data) {
      if (data.failure) return data.failure;
      if (Array.isArray(data.members)) {
        const failed = data.members.find((member) => member && member.failure);
        if (failed) return failed.failure;
        if (data.body && data.body.failure) return data.body.failure;
      }
      return null;
    }

    _renderDetails(failure) {
      const details = failure && failure.details;
      const entries = details && typeof details === 'object' ? Object.entries(details) : [];
      if (!entries.length) {
        if (this._details.childElementCount) this._details.replaceChildren();
        show(this._details, false);
        return;
      }
      this._details.replaceChildren(...entries.map(([key, value]) => el('li', {'data-key': key}, [
        el('span', {class: 'key'}, [document.createTextNode(key)]),
        document.createTextNode(': '),
        el('span', {class: 'value'}, [document.createTextNode(asText(value))]),
      ])));
      show(this._details, true);
    }

    _membersText(data) {
      const members = data.members.concat(data.body ? [data.body] : []);
      const done = members.filter((member) => member && member.status === 'finished').length;
      return format(this._label('members'), {done, total: members.length});
    }

    _renderMembers(data) {
      const members = Array.isArray(data.members) ? data.members.slice() : null;
      if (!members) {
        show(this._members, false);
        return;
      }
      if (data.body) members.push(data.body);
      while (this._members.childElementCount > members.length) this._members.lastElementChild.remove();
      members.forEach((member, index) => {
        let row = this._members.children[index];
        if (!row) {
          const fill = el('div', {class: 'fill', part: 'member-fill'});
          row = el('li', {class: 'member', part: 'member'}, [
            el('span', {class: 'member-name', part: 'member-name'}),
            el('div', {class: 'bar', part: 'member-bar', role: 'progressbar', 'aria-valuemin': 0,
              'aria-valuemax': 100}, [fill]),
            el('span', {class: 'member-status', part: 'member-status'}),
          ]);
          this._members.append(row);
        }
        const [name, bar, statusNode] = row.children;
        const status = String((member && member.status) || 'unknown');
        const label = `${index + 1}. ${(member && member.name) || (member && member.id) || ''}`;
        row.dataset.id = (member && member.id) || '';
        row.dataset.status = status;
        row.dataset.outcome = outcomeOf(status);
        setText(name, label);
        name.title = (member && member.id) || '';
        const progress = (member && member.progress) || {};
        this._renderBar(bar, bar.firstElementChild, percentOf(member), progress.message || '', status, label);
        setText(statusNode, member ? this._statusText(member) : '');
      });
      show(this._members, members.length > 0);
    }

    _showError(text, fatal = false) {
      setText(this._error, text || '');
      show(this._error, Boolean(text));
      this._root.dataset.error = text ? (fatal ? 'fatal' : 'retrying') : '';
      if (fatal && text) show(this._cancel, false);
    }

    // --- cancel --------------------------------------------------------------------------

    async _requestCancel() {
      if (!this._current || this._current.kind !== 'task') return;
      const session = this._session;
      const id = this._current.id;
      const hadFocus = this.shadowRoot.activeElement === this._cancel;
      this._cancel.disabled = true;
      this._cancelRequested = true;  // said at once; taken back if the server refuses
      if (this._state) this._render(this._state);
      if (hadFocus) this._status.focus();  // the button goes away: keep the keyboard user's place
      try {
        const response = await fetch(new URL(`api/tasks/${encodeURIComponent(id)}/cancel`, this._base).href, {
          method: 'POST', mode: 'cors', credentials: 'omit',
          headers: {Authorization: `Bearer ${this._token}`, 'Content-Type': 'application/json',
            Accept: 'application/json'},
          body: '{}',
        });
        const data = await response.json().catch(() => null);
        if (session !== this._session) return;
        if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
        if (data && data.id === this._current.id) this._update(data);
        else if (this._state) this._render(this._state);
      } catch (error) {
        if (session !== this._session) return;
        this._cancelRequested = false;
        this._cancel.disabled = false;
        if (this._state) this._render(this._state);
        this._showError(`${this._label('cancel-failed')}: ${error.message}`);
      }
    }
  }

  window.customElements.define('pulse-progress', PulseProgress);
})();
