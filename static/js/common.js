// What every page shares: the live connection, batched drawing, the accessible progress bar,
// API calls with the CSRF token, formatting and the confirmation dialog.
// Task data reaches the DOM through textContent and attributes only, never as HTML.

export const STATUSES = ['unstarted', 'scheduled', 'running', 'retrying', 'finished', 'failed',
  'revoked', 'lost', 'abandoned', 'replayed', 'skipped', 'expired'];

export const canAct = document.body.dataset.canAct === 'true';
const csrfMeta = document.querySelector('meta[name="csrf-token"]');
const csrfToken = csrfMeta ? csrfMeta.content : '';

// Build an element: el('td', {class: 'x', text: task.name, attrs: {title: '...'}}, [children]).
export function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.class) node.className = options.class;
  if (options.text != null) node.textContent = String(options.text);
  for (const [name, value] of Object.entries(options.attrs || {})) {
    if (value != null) node.setAttribute(name, String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

export function setText(node, text) {
  const value = text == null ? '' : String(text);
  if (node.textContent !== value) node.textContent = value;
}

// Collects items by key and draws them once per animation frame, however fast they arrive.
export function frameBatcher(draw) {
  const pending = new Map();
  let frame = 0;
  return (key, item) => {
    // Pushes and HTTP answers race each other: within a frame keep the newer copy of a task, not
    // the one that happened to arrive last (an action's answer could hide the push after it).
    const held = pending.get(key);
    if (!(held && item && held.updated_at != null && item.updated_at != null
          && item.updated_at < held.updated_at)) pending.set(key, item);
    if (!frame) {
      frame = requestAnimationFrame(() => {
        frame = 0;
        const items = [...pending.values()];
        pending.clear();
        draw(items);
      });
    }
  };
}

// The accessible progress bar: <div class="bar" role="progressbar"><div class="fill"></div></div>.
export function progressBar(label) {
  const bar = el('div', {class: 'bar', attrs: {role: 'progressbar', 'aria-valuemin': 0,
    'aria-valuemax': 100, 'aria-label': label}}, [el('div', {class: 'fill'})]);
  return bar;
}

export function renderBar(bar, task) {
  const progress = task.progress;
  const percent = progress && progress.percent != null ? progress.percent : null;
  const message = progress && progress.message ? progress.message : '';
  const fill = bar.firstElementChild;
  bar.dataset.status = task.status;
  bar.setAttribute('aria-label', `Progress of ${task.name || task.id}`);
  const running = task.status === 'running' || task.status === 'retrying';
  bar.classList.toggle('indeterminate', percent === null && running);
  if (percent === null) {
    bar.removeAttribute('aria-valuenow');
    fill.style.width = running ? '' : '0%';
    bar.setAttribute('aria-valuetext', message || task.status);
  } else {
    bar.setAttribute('aria-valuenow', String(Math.round(percent)));
    bar.setAttribute('aria-valuetext', message ? `${percent}% — ${message}` : `${percent}%`);
    fill.style.width = `${percent}%`;
  }
}

export function progressText(task) {
  const p = task.progress;
  if (!p) return '';
  const parts = [];
  if (p.percent != null) parts.push(`${p.percent}%`);
  else if (p.current != null) parts.push(`${p.current} done`);
  if (p.rate != null) parts.push(`${p.rate}/s`);
  if (p.eta_seconds != null) parts.push(`ETA ${formatDuration(p.eta_seconds)}`);
  return parts.join(' · ');
}

export function formatTime(epoch) {
  if (epoch == null) return '';
  return new Date(epoch * 1000).toLocaleString();
}

export function formatDuration(seconds) {
  if (seconds == null) return '';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatAgo(epoch) {
  if (epoch == null) return 'never';
  return `${formatDuration(Math.max(0, Date.now() / 1000 - epoch))} ago`;
}

// JSON API call; mutating calls carry the session's CSRF token. Never throws for HTTP errors.
export async function api(path, {method = 'GET', body} = {}) {
  const headers = {Accept: 'application/json'};
  if (method !== 'GET') headers['X-CSRF-Token'] = csrfToken;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  try {
    const response = await fetch(path, {method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body)});
    const data = await response.json().catch(() => ({}));
    return {ok: response.ok, status: response.status, data};
  } catch (error) {
    return {ok: false, status: 0, data: {error: `network error: ${error.message}`}};
  }
}

// Ask before acting; the message names the task. Resolves true when confirmed.
export function confirmAction(title, message) {
  const dialog = document.getElementById('confirm-dialog');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-message').textContent = message;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), {once: true});
    dialog.returnValue = '';
    dialog.showModal();
  });
}

// The live connection. `onSync(socket)` runs on every (re)connection and whenever the server's
// event stream comes back, so a page resubscribes and redraws from a fresh snapshot and no bar
// stays stale after an outage (of the server or of Redis). The indicator in the header says
// live / disconnected / event stream lost. WebSocket only, never long-polling: no sticky sessions
// behind a balancer, and the browser sends its Origin on every handshake, which the server needs
// before it believes the session cookie (README, Socket.IO).
export function connectLive(onSync) {
  const indicator = document.getElementById('connection');
  const show = (state, text) => {
    indicator.dataset.state = state;
    indicator.textContent = text;
  };
  const socket = io({transports: ['websocket']});  // eslint-disable-line no-undef
  socket.on('connect', () => {
    show('live', 'live');
    onSync(socket);
  });
  socket.on('disconnect', () => show('down', 'disconnected — reconnecting…'));
  socket.on('connect_error', () => show('down', 'disconnected — reconnecting…'));
  socket.on('monitor', (status) => {
    if (!socket.connected) return;
    show(status.connected ? 'live' : 'degraded',
      status.connected ? 'live' : 'live — event stream lost, retrying…');
    // The stream is back, but what happened while it was down sent no push (Redis pub/sub keeps
    // nothing): redraw from a fresh snapshot, as after a reconnection of the socket itself.
    if (status.connected) onSync(socket);
  });
  return socket;
}

// Subscribe and hand the acknowledgement to `then`; a refused or failed subscribe shows up in
// the indicator rather than silently leaving the page stale.
export function subscribe(socket, payload, then) {
  socket.timeout(10000).emit('subscribe', payload, (error, ack) => {
    if (error || !ack || ack.error) {
      const indicator = document.getElementById('connection');
      indicator.dataset.state = 'error';
      indicator.textContent = `subscribe failed: ${error ? 'no answer' : (ack && ack.error) || 'no answer'}`;
      return;
    }
    then(ack);
  });
}

// Who consumes a queue, as the overview and the queues page say it (null: not asked yet).
export function consumersText(consumers) {
  if (consumers == null) return 'not known yet';
  if (consumers.length === 0) return 'none';
  return consumers.join(', ');
}

// Keeps a page's figures fresh by calling `read` (async): one read at a time (a call during one
// makes one more after it), every `every` ms while the tab is visible, at once when the tab comes
// back after longer, and `soon()` (a push said something changed) at most once per `soonEvery` ms
// however many pushes ask. Returns {load, soon}.
export function refresher(read, {every, soonEvery}) {
  let lastLoad = 0;
  let loading = null;
  let again = false;
  let soonTimer = 0;
  let pollTimer = 0;

  function schedulePoll() {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(() => {
      if (document.hidden) schedulePoll();
      else load();
    }, every);
  }

  async function load() {
    if (loading) {
      again = true;
      return loading;
    }
    lastLoad = Date.now();
    loading = read();
    try {
      await loading;
    } finally {
      loading = null;
      schedulePoll();
      if (again) {
        again = false;
        soon();
      }
    }
  }

  function soon() {
    if (soonTimer) return;
    soonTimer = setTimeout(() => {
      soonTimer = 0;
      load();
    }, Math.max(0, lastLoad + soonEvery - Date.now()));
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && Date.now() - lastLoad > every) load();
  });
  return {load, soon};
}
