// The dashboard: a live list of tasks with progress bars, fed by Socket.IO pushes.
// Task data reaches the DOM through textContent and attributes only, never as HTML.
'use strict';

(() => {
  const list = document.getElementById('tasks');
  const empty = document.getElementById('tasks-empty');
  const template = document.getElementById('task-template');
  const connection = document.getElementById('connection');
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = csrfMeta ? csrfMeta.content : '';
  const rows = new Map();      // task id -> row element
  const pending = new Map();   // task id -> latest task JSON not yet drawn
  let frame = 0;

  // Batch DOM writes: however many pushes arrive, draw once per animation frame.
  function schedule(task) {
    pending.set(task.id, task);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    frame = 0;
    for (const task of pending.values()) render(task);
    pending.clear();
    empty.hidden = rows.size > 0;
  }

  function rowFor(id) {
    let row = rows.get(id);
    if (!row) {
      row = template.content.firstElementChild.cloneNode(true);
      row.dataset.id = id;
      rows.set(id, row);
      list.prepend(row);
    }
    return row;
  }

  function setText(row, selector, text) {
    row.querySelector(selector).textContent = text == null ? '' : String(text);
  }

  function render(task) {
    const row = rowFor(task.id);
    row.dataset.status = task.status;
    setText(row, '.task-name', task.name || '(unnamed task)');
    setText(row, '.task-status', task.status);
    setText(row, '.task-id', task.id);
    setText(row, '.task-worker', task.worker ? `on ${task.worker}` : '');
    renderBar(row, task);
    renderResult(row, task);
    renderFailure(row, task.failure);
  }

  function renderBar(row, task) {
    const bar = row.querySelector('.bar');
    const fill = bar.querySelector('.fill');
    const progress = task.progress;
    const percent = progress && progress.percent != null ? progress.percent : null;
    const message = progress && progress.message ? progress.message : '';
    bar.setAttribute('aria-label', `Progress of ${task.name || task.id}`);
    if (percent === null) {
      bar.removeAttribute('aria-valuenow');
      bar.classList.toggle('indeterminate', task.status === 'running');
      fill.style.width = task.status === 'running' ? '' : '0%';
      bar.setAttribute('aria-valuetext', message || task.status);
      setText(row, '.task-percent', progress && progress.current != null ? `${progress.current} done` : '');
    } else {
      bar.classList.remove('indeterminate');
      bar.setAttribute('aria-valuenow', String(Math.round(percent)));
      bar.setAttribute('aria-valuetext', message ? `${percent}% — ${message}` : `${percent}%`);
      fill.style.width = `${percent}%`;
      setText(row, '.task-percent', `${percent}%`);
    }
    setText(row, '.task-message', message);
  }

  function renderResult(row, task) {
    const box = row.querySelector('.task-result');
    box.hidden = task.status !== 'finished';
    if (!box.hidden) setText(row, '.result-value', JSON.stringify(task.result));
  }

  function renderFailure(row, failure) {
    const box = row.querySelector('.failure');
    box.hidden = !failure;
    if (!failure) return;
    setText(row, '.exc-type', failure.exc_type || 'Error');
    setText(row, '.exc-message', failure.exc_message);
    const table = row.querySelector('.details');
    const body = table.querySelector('tbody');
    const details = failure.details && typeof failure.details === 'object' ? failure.details : {};
    const cells = Object.entries(details).map(([key, value]) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      const td = document.createElement('td');
      th.scope = 'row';
      th.textContent = key;
      td.textContent = typeof value === 'string' ? value : JSON.stringify(value);
      tr.append(th, td);
      return tr;
    });
    body.replaceChildren(...cells);
    table.hidden = cells.length === 0;
    const traceBox = row.querySelector('.traceback-box');
    traceBox.hidden = !failure.traceback;
    setText(row, '.traceback', failure.traceback);
  }

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
  }

  // The page's session cookie authenticates the connection; no token lives in the page.
  const socket = io({ transports: ['websocket', 'polling'] });
  socket.on('connect', () => {
    setConnection('live', 'live');
    // Resync from a snapshot on every (re)connect, so no bar stays stale after an outage.
    socket.emit('subscribe', { dashboard: true }, (ack) => {
      if (!ack || ack.error) {
        setConnection('error', `subscribe failed: ${ack ? ack.error : 'no answer'}`);
        return;
      }
      for (const task of [...ack.tasks].reverse()) schedule(task);
    });
  });
  socket.on('disconnect', () => setConnection('down', 'disconnected — reconnecting…'));
  socket.on('connect_error', (err) => setConnection('down', `cannot connect: ${err.message}`));
  socket.on('tasks', (tasks) => tasks.forEach(schedule));
  socket.on('monitor', (status) => {
    if (socket.connected) {
      setConnection(status.connected ? 'live' : 'degraded',
        status.connected ? 'live' : 'live — event stream lost, retrying…');
    }
  });

  const form = document.getElementById('launch-form');
  const status = document.getElementById('launch-status');
  if (!form) return;  // a viewer's page has no launch form
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let kwargs;
    try {
      kwargs = JSON.parse(form.elements.kwargs.value || '{}');
    } catch (err) {
      status.textContent = `Keyword arguments are not valid JSON: ${err.message}`;
      return;
    }
    const response = await fetch(form.dataset.url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrfToken },
      body: JSON.stringify({ name: form.elements.name.value, args: [], kwargs }),
    });
    const body = await response.json().catch(() => ({}));
    status.textContent = response.ok
      ? `Launched ${form.elements.name.value} as ${body.id}`
      : `Not launched: ${body.error || response.statusText}`;
  });
})();
