// The workers page: every worker Pulse knows, online or offline, its last heartbeat, processed
// count, load and the tasks running on it with live bars; and, in a panel per worker, what the
// worker reports and the operator's controls (worker-control.js).
// Initial state from GET /api/workers (again on every reconnection); then `workers` pushes
// replace a worker's card and `tasks` pushes move its bars. A worker whose heartbeat expired
// is shown offline even before the server says so.
// Task data reaches the DOM through textContent and attributes only, never as HTML.

import {
  api, connectLive, el, formatAgo, frameBatcher, progressBar, progressText, renderBar, setText,
  subscribe,
} from './common.js';
import {attachControl} from './worker-control.js';

const container = document.getElementById('workers');
const WORKERS_URL = container.dataset.workersUrl;
const TASKS_URL = container.dataset.tasksUrl;
const CONTROL_URL = container.dataset.controlUrl;
const template = document.getElementById('worker-template');
const emptyState = document.getElementById('workers-empty');
const summary = document.getElementById('workers-summary');
const errorLine = document.getElementById('workers-error');
const TICK_MS = 2000;     // how often heartbeats ages and offline marks are re-checked
const LINGER_MS = 4000;   // an ended task stays this long under its worker, its bar full
const RUNNING = new Set(['running', 'retrying']);
const EMPTY_ARGS = new Set(['', '()', '[]', '{}', 'None', 'null']);

const workers = new Map();    // hostname -> {data, section, rows: Map(task id -> <tr>)}
const latest = new Map();     // task id -> newest task JSON seen
const hostOf = new Map();     // task id -> hostname whose card shows it
const lingering = new Map();  // task id -> timer removing its row
let loaded = false;

function isOnline(data) {
  if (!data.online) return false;
  return !(data.expires_at != null && Date.now() / 1000 > data.expires_at);
}

function formatLoad(loadavg) {
  if (!Array.isArray(loadavg) || loadavg.length === 0) return '—';
  return loadavg.map((value) => Number(value).toFixed(2)).join(' · ');
}

// ---- Worker cards ------------------------------------------------------------------------

function cardFor(hostname) {
  let entry = workers.get(hostname);
  if (!entry) {
    const section = template.content.firstElementChild.cloneNode(true);
    section.dataset.hostname = hostname;
    section.setAttribute('aria-label', `Worker ${hostname}`);
    setText(section.querySelector('.worker-name'), hostname);
    attachControl(section, hostname, CONTROL_URL);
    entry = {data: null, section, rows: new Map()};
    workers.set(hostname, entry);
    const next = [...container.children].find((node) => node.dataset.hostname > hostname);
    container.insertBefore(section, next || null);
  }
  return entry;
}

function renderState(entry) {
  const {data, section} = entry;
  const online = isOnline(data);
  section.dataset.online = String(online);
  const state = section.querySelector('.worker-state');
  state.dataset.state = online ? 'online' : 'offline';
  setText(state, online ? 'online' : 'offline');
  setText(section.querySelector('.worker-heartbeat'),
    data.last_heartbeat == null && !online ? '—' : formatAgo(data.last_heartbeat));
  for (const row of entry.rows.values()) {
    const task = latest.get(row.dataset.id);
    setText(row.querySelector('.task-started'), task && task.started_at ? formatAgo(task.started_at) : '');
  }
}

function renderWorker(incoming) {
  const entry = cardFor(incoming.hostname);
  let data = incoming;
  // Celery forgets a worker's heartbeats when it goes offline: keep showing the last one seen.
  if (data.last_heartbeat == null && entry.data && entry.data.last_heartbeat != null) {
    data = {...data, last_heartbeat: entry.data.last_heartbeat};
  }
  entry.data = data;
  const {section} = entry;
  setText(section.querySelector('.worker-processed'), data.processed ?? '—');
  setText(section.querySelector('.worker-load'), formatLoad(data.loadavg));
  reconcileTasks(entry, data.active_tasks || []);
  renderState(entry);
}

function removeWorker(hostname) {
  const entry = workers.get(hostname);
  if (!entry) return;
  for (const id of entry.rows.keys()) forgetTask(id);
  entry.section.remove();
  workers.delete(hostname);
}

function renderSummary() {
  const all = [...workers.values()].filter((entry) => entry.data);
  const online = all.filter((entry) => isOnline(entry.data)).length;
  emptyState.hidden = !loaded || all.length > 0;
  if (!loaded) return;
  setText(summary, all.length === 0 ? 'No worker known.'
    : `${all.length} worker${all.length === 1 ? '' : 's'}, ${online} online`);
}

// ---- Active task rows --------------------------------------------------------------------

function taskRow(entry, task) {
  let row = entry.rows.get(task.id);
  if (!row) {
    const link = el('a', {class: 'task-name', attrs: {href: `${TASKS_URL}/${encodeURIComponent(task.id)}`}});
    row = el('tr', {class: 'active-task', attrs: {'data-id': task.id}}, [
      el('td', {class: 'task-cell'}, [
        link,
        el('div', {class: 'task-meta'}, [el('code', {class: 'task-id'})]),
        el('div', {class: 'task-args'}),
      ]),
      el('td', {class: 'progress-cell'}, [
        progressBar(`Progress of ${task.id}`),
        el('div', {class: 'task-progress'}, [
          el('span', {class: 'task-percent'}), ' ', el('span', {class: 'task-message'}),
        ]),
      ]),
      el('td', {class: 'task-started'}),
    ]);
    entry.rows.set(task.id, row);
    entry.section.querySelector('.active-tasks tbody').append(row);
    hostOf.set(task.id, entry.data ? entry.data.hostname : entry.section.dataset.hostname);
  }
  return row;
}

function renderTaskRow(row, task) {
  row.dataset.status = task.status;
  setText(row.querySelector('.task-name'), task.name || '(unnamed task)');
  setText(row.querySelector('.task-id'), task.id);
  const args = [task.args, task.kwargs].filter((value) => value != null && !EMPTY_ARGS.has(String(value)));
  const argsBox = row.querySelector('.task-args');
  argsBox.hidden = args.length === 0;
  setText(argsBox, args.join(' '));
  renderBar(row.querySelector('.bar'), task);
  setText(row.querySelector('.task-percent'), progressText(task));
  setText(row.querySelector('.task-message'), task.progress && task.progress.message);
  setText(row.querySelector('.task-started'), task.started_at ? formatAgo(task.started_at) : '');
}

function refreshTaskList(entry) {
  const {section, rows} = entry;
  const running = [...rows.values()].filter((row) => RUNNING.has(row.dataset.status)).length;
  setText(section.querySelector('.worker-running'), running);
  section.querySelector('.active-tasks').hidden = rows.size === 0;
  section.querySelector('.worker-idle').hidden = rows.size > 0;
}

function forgetTask(id) {
  clearTimeout(lingering.get(id));
  lingering.delete(id);
  latest.delete(id);
  hostOf.delete(id);
}

function removeRow(id) {
  const entry = workers.get(hostOf.get(id));
  forgetTask(id);
  if (!entry) return;
  const row = entry.rows.get(id);
  if (row) row.remove();
  entry.rows.delete(id);
  refreshTaskList(entry);
}

// An ended task keeps its (full) bar a moment, then leaves its worker's list.
function linger(id) {
  if (!lingering.has(id)) lingering.set(id, setTimeout(() => removeRow(id), LINGER_MS));
}

function isOlder(task, known) {
  return known && task.updated_at != null && known.updated_at != null && task.updated_at < known.updated_at;
}

function remember(task) {
  if (isOlder(task, latest.get(task.id))) return latest.get(task.id);
  latest.set(task.id, task);
  return task;
}

// The server's list of running tasks for this worker wins, except for tasks we just saw end.
function reconcileTasks(entry, activeTasks) {
  const wanted = new Set(activeTasks.map((task) => task.id));
  for (const id of [...entry.rows.keys()]) {
    if (wanted.has(id)) continue;
    const known = latest.get(id);
    if (known && !RUNNING.has(known.status)) {
      renderTaskRow(entry.rows.get(id), known);
      linger(id);
    } else {
      removeRow(id);
    }
  }
  for (const incoming of activeTasks) {
    const task = remember(incoming);
    renderTaskRow(taskRow(entry, task), task);
    if (!RUNNING.has(task.status)) linger(task.id);
  }
  refreshTaskList(entry);
}

// `tasks` pushes: move bars; a task that started on a known worker joins its list at once.
const drawTasks = frameBatcher((ids) => {
  for (const id of ids) {
    const task = latest.get(id);
    if (!task) continue;
    let host = hostOf.get(id);
    if (host && task.worker && task.worker !== host) {
      removeRow(id);
      latest.set(id, task);
      host = undefined;
    }
    if (!host) {
      const entry = RUNNING.has(task.status) && task.worker ? workers.get(task.worker) : null;
      if (!entry || !entry.data) continue;
      renderTaskRow(taskRow(entry, task), task);
      refreshTaskList(entry);
      continue;
    }
    const entry = workers.get(host);
    const row = entry && entry.rows.get(id);
    if (!row) continue;
    renderTaskRow(row, task);
    if (!RUNNING.has(task.status)) linger(id);
    refreshTaskList(entry);
  }
});

function acceptTask(task) {
  if (!task || !task.id) return;
  const known = latest.get(task.id);
  const tracked = hostOf.has(task.id);
  if (!tracked && !(RUNNING.has(task.status) && workers.has(task.worker))) return;
  if (isOlder(task, known)) return;
  latest.set(task.id, task);
  drawTasks(task.id, task.id);
}

// ---- Loading -----------------------------------------------------------------------------

let generation = 0;

async function loadWorkers() {
  const mine = ++generation;
  const answer = await api(WORKERS_URL);
  if (mine !== generation) return;  // a newer load is on its way
  if (!answer.ok) {
    errorLine.hidden = false;
    setText(errorLine, `Could not load the workers (${answer.data.error || `HTTP ${answer.status}`}); `
      + 'what is shown may be out of date.');
    return;
  }
  errorLine.hidden = true;
  const list = answer.data.workers || [];
  const names = new Set(list.map((worker) => worker.hostname));
  for (const hostname of [...workers.keys()]) if (!names.has(hostname)) removeWorker(hostname);
  for (const worker of list) renderWorker(worker);
  loaded = true;
  renderSummary();
}

function tick() {
  for (const entry of workers.values()) if (entry.data) renderState(entry);
  renderSummary();
}

setInterval(tick, TICK_MS);

const socket = connectLive((live) => {
  // Every (re)connection: rejoin the dashboard room, then re-read every worker.
  subscribe(live, {dashboard: true}, () => loadWorkers());
});
socket.on('workers', (list) => {
  for (const worker of list) renderWorker(worker);
  renderSummary();
});
socket.on('tasks', (tasks) => tasks.forEach(acceptTask));

loadWorkers();  // at once, even before the live connection is up
