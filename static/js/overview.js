// The overview: counts per status, throughput over the last hour, failure rate, queues,
// warnings, the launch form and a live list of recent tasks.
// Counts and tasks arrive by push; the overview (throughput chart, queues, warnings) is re-read
// from the server when a `counts` push shows tasks finished, failed, were sent or started (at
// most every 2 s), and when a worker comes online or goes offline. Queue depth has no push of
// its own, so the overview is also re-read every 10 s while the page is visible.
// Task data reaches the DOM through textContent and attributes only, never as HTML.

import {
  STATUSES, api, connectLive, consumersText, el, formatDuration, frameBatcher, progressBar, progressText,
  refresher, renderBar, setText, subscribe,
} from './common.js';
import {barChart} from './charts.js';

const root = document.getElementById('overview');
const OVERVIEW_URL = root.dataset.overviewUrl;
const TASKS_URL = root.dataset.tasksUrl;
const CHART_EVERY_MS = 2000;   // the chart is re-read at most this often on pushes
const POLL_EVERY_MS = 10000;   // queues and warnings: re-read this often
const MAX_ROWS = 50;           // recent tasks kept in the list
const ACTIVE = new Set(['unstarted', 'scheduled', 'running', 'retrying']);

// ---- Counts ------------------------------------------------------------------------------

const tiles = document.getElementById('count-tiles');
const tileValues = new Map();  // status (or "total") -> the <dd> holding its number

function tile(key) {
  let value = tileValues.get(key);
  if (!value) {
    value = el('dd', {class: 'value', text: '0', attrs: {id: `count-${key}`}});
    tiles.append(el('div', {class: 'tile', attrs: {'data-status': key}},
      [el('dt', {class: 'label', text: key}), value]));
    tileValues.set(key, value);
  }
  return value;
}

tile('total');
for (const status of STATUSES) tile(status);

const WATCHED = ['finished', 'failed', 'scheduled', 'running'];
let seenCounts = null;  // the WATCHED counts last drawn, to spot a change worth a re-read

function renderCounts(counts) {
  if (!counts || !counts.by_status) return;
  setText(tile('total'), counts.total ?? 0);
  for (const status of new Set([...STATUSES, ...Object.keys(counts.by_status)])) {
    const value = counts.by_status[status] ?? 0;
    setText(tile(status), value);
    tile(status).parentElement.classList.toggle('zero', value === 0);
  }
  // Finishes and failures move the chart; sent and started tasks move the queues.
  const key = WATCHED.map((status) => counts.by_status[status] ?? 0).join('/');
  const changed = seenCounts !== null && key !== seenCounts;
  seenCounts = key;
  return changed;
}

// ---- Throughput and failure rate ---------------------------------------------------------

const chart = document.getElementById('throughput-chart');
const peakLabel = document.getElementById('chart-peak');
const rateFigure = document.getElementById('failure-rate');
const rateBasis = document.getElementById('failure-rate-basis');

function minuteLabel(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
}

function renderThroughput(rows, failureRate) {
  const labels = rows.map((row) => minuteLabel(row.minute));
  const finished = rows.map((row) => row.finished || 0);
  const failed = rows.map((row) => row.failed || 0);
  const max = barChart(chart, labels, [
    {name: 'finished', class: 'finished', values: finished},
    {name: 'failed', class: 'failed', values: failed},
  ]);
  const sum = (values) => values.reduce((a, b) => a + b, 0);
  const totalFinished = sum(finished);
  const totalFailed = sum(failed);
  let summary = `Tasks ended per minute over the last hour: ${totalFinished} finished, ${totalFailed} failed`;
  if (totalFinished + totalFailed > 0) {
    const totals = rows.map((_, i) => finished[i] + failed[i]);
    const busiest = totals.indexOf(Math.max(...totals));
    summary += `; busiest minute ${labels[busiest]} with ${totals[busiest]}`;
    setText(peakLabel, `top of chart: ${max} per minute`);
  } else {
    summary += '; nothing ended in the last hour';
    setText(peakLabel, 'nothing ended in the last hour');
  }
  chart.setAttribute('aria-label', summary);
  chart.dataset.finished = String(totalFinished);
  chart.dataset.failed = String(totalFailed);

  if (failureRate == null) {
    setText(rateFigure, '—');
    setText(rateBasis, '(no task ended in the last hour)');
  } else {
    setText(rateFigure, `${(failureRate * 100).toFixed(1)}%`);
    setText(rateBasis, `of ${totalFinished + totalFailed} ended in the last hour`);
  }
}

// ---- Queues ------------------------------------------------------------------------------

const queueBody = document.querySelector('#queues tbody');
const queuesEmpty = document.getElementById('queues-empty');

function renderQueues(queues) {
  const rows = queues.map((queue) => {
    const unconsumed = Array.isArray(queue.consumers) && queue.consumers.length === 0;
    const tr = el('tr', {attrs: {'data-queue': queue.name, 'data-depth': queue.depth}}, [
      el('th', {text: queue.name, attrs: {scope: 'row'}}),
      el('td', {class: 'number depth', text: queue.depth}),
      el('td', {class: 'oldest', text: queue.oldest_age == null ? '—' : formatDuration(queue.oldest_age)}),
      el('td', {class: 'consumers', text: consumersText(queue.consumers)}),
    ]);
    tr.classList.toggle('unconsumed', unconsumed);
    tr.classList.toggle('waiting', queue.depth > 0);
    return tr;
  });
  queueBody.replaceChildren(...rows);
  queuesEmpty.hidden = rows.length > 0;
}

// ---- Warnings ----------------------------------------------------------------------------
// Kept by key and only changed when their text changes, so a screen reader announces a
// warning when it appears, not on every refresh.

const warningsBox = document.getElementById('warnings');
const warningNodes = new Map();
let monitorConnected = true;

function renderWarnings(warnings) {
  const wanted = new Map();
  for (const warning of warnings) wanted.set(`${warning.kind}:${warning.queue ?? ''}`, warning);
  if (!monitorConnected) {
    wanted.set('monitor:', {kind: 'monitor', queue: null,
      message: 'The event monitor lost its connection to the broker: live updates are paused until it is back.'});
  }
  for (const [key, node] of warningNodes) {
    if (!wanted.has(key)) {
      node.remove();
      warningNodes.delete(key);
    }
  }
  for (const [key, warning] of wanted) {
    let node = warningNodes.get(key);
    if (!node) {
      node = el('p', {class: 'warning', attrs: {role: 'alert', 'data-kind': warning.kind,
        'data-queue': warning.queue}});
      warningsBox.append(node);
      warningNodes.set(key, node);
    }
    setText(node, warning.message);
  }
  warningsBox.hidden = wanted.size === 0;
}

let lastWarnings = [];
let onlineCount = null;  // workers online, as the last overview said

// ---- Loading the overview ----------------------------------------------------------------

const updated = document.getElementById('overview-updated');

async function readOverview() {
  const answer = await api(OVERVIEW_URL);
  if (answer.ok) {
    const data = answer.data;
    renderCounts(data.counts);
    renderThroughput(data.throughput || [], data.failure_rate);
    renderQueues(data.queues || []);
    monitorConnected = !data.monitor || data.monitor.connected !== false;
    lastWarnings = data.warnings || [];
    onlineCount = data.workers ? data.workers.online : null;
    renderWarnings(lastWarnings);
    updated.classList.remove('stale');
    setText(updated, `Updated ${new Date((data.at || Date.now() / 1000) * 1000).toLocaleTimeString()}`);
  } else {
    updated.classList.add('stale');
    const reason = answer.data.error || `HTTP ${answer.status}`;
    setText(updated, `Could not refresh (${reason}); figures may be out of date.`);
  }
}

// Pushes re-read it soon, but at most once per CHART_EVERY_MS however many ask.
const {load: loadOverview, soon: refreshSoon} = refresher(readOverview,
  {every: POLL_EVERY_MS, soonEvery: CHART_EVERY_MS});

// ---- Recent tasks ------------------------------------------------------------------------

const list = document.getElementById('tasks');
const empty = document.getElementById('tasks-empty');
const template = document.getElementById('task-template');
const rows = new Map();    // task id -> row element
const latest = new Map();  // task id -> the newest task JSON seen

function rowFor(id) {
  let row = rows.get(id);
  if (!row) {
    row = template.content.firstElementChild.cloneNode(true);
    row.dataset.id = id;
    row.querySelector('.task-progress').before(progressBar(`Progress of ${id}`));
    row.querySelector('.task-name').href = `${TASKS_URL}/${encodeURIComponent(id)}`;
    rows.set(id, row);
    list.prepend(row);
  }
  return row;
}

function part(row, selector) {
  return row.querySelector(selector);
}

const EMPTY_ARGS = new Set(['', '()', '[]', '{}', 'None', 'null']);

function renderTask(task) {
  const row = rowFor(task.id);
  row.dataset.status = task.status;
  setText(part(row, '.task-name'), task.name || '(unnamed task)');
  const badge = part(row, '.task-status');
  badge.dataset.status = task.status;
  setText(badge, task.status);
  setText(part(row, '.task-id'), task.id);
  setText(part(row, '.task-worker'), task.worker ? `on ${task.worker}` : '');
  setText(part(row, '.task-time'), task.runtime != null ? `ran ${formatDuration(task.runtime)}` : '');
  const args = [task.args, task.kwargs].filter((value) => value != null && !EMPTY_ARGS.has(String(value)));
  const argsBox = part(row, '.task-args');
  argsBox.hidden = args.length === 0;
  setText(argsBox, args.length ? `arguments: ${args.join(' ')}` : '');
  renderBar(part(row, '.bar'), task);
  setText(part(row, '.task-percent'), progressText(task));
  setText(part(row, '.task-message'), task.progress && task.progress.message);
  renderResult(row, task);
  renderFailure(row, task.failure);
}

function renderResult(row, task) {
  const box = part(row, '.task-result');
  box.hidden = task.status !== 'finished';
  setText(part(row, '.result-value'), box.hidden ? '' : JSON.stringify(task.result ?? null));
}

function renderFailure(row, failure) {
  const box = part(row, '.failure');
  box.hidden = !failure;
  if (!failure) return;
  setText(part(row, '.exc-type'), failure.exc_type || 'Error');
  setText(part(row, '.exc-message'), failure.exc_message);
  const table = part(row, '.details');
  const details = failure.details && typeof failure.details === 'object' ? failure.details : {};
  const cells = Object.entries(details).map(([key, value]) => el('tr', {}, [
    el('th', {text: key, attrs: {scope: 'row'}}),
    el('td', {text: typeof value === 'string' ? value : JSON.stringify(value)}),
  ]));
  table.tBodies[0].replaceChildren(...cells);
  table.hidden = cells.length === 0;
  part(row, '.traceback-box').hidden = !failure.traceback;
  setText(part(row, '.traceback'), failure.traceback);
}

function dropRow(id) {
  const row = rows.get(id);
  if (row) row.remove();
  rows.delete(id);
  latest.delete(id);
}

// Keep the newest MAX_ROWS rows; the oldest ended ones go first, then the oldest at all.
function trim() {
  let over = rows.size - MAX_ROWS;
  for (let row = list.lastElementChild; row && over > 0;) {
    const previous = row.previousElementSibling;
    if (!ACTIVE.has(row.dataset.status)) {
      dropRow(row.dataset.id);
      over -= 1;
    }
    row = previous;
  }
  while (over > 0 && list.lastElementChild) {
    dropRow(list.lastElementChild.dataset.id);
    over -= 1;
  }
}

function afterDraw() {
  trim();
  empty.hidden = rows.size > 0;
}

const draw = frameBatcher((tasks) => {
  for (const task of tasks) renderTask(task);
  afterDraw();
});

// A change older than what the row already shows (a snapshot that crossed a push) is ignored.
function isOlder(task, known) {
  return known && task.updated_at != null && known.updated_at != null && task.updated_at < known.updated_at;
}

function accept(task) {
  if (!task || !task.id || isOlder(task, latest.get(task.id))) return;
  latest.set(task.id, task);
  draw(task.id, task);
}

// A fresh snapshot (newest first) replaces the list: rows it no longer holds go.
function resync(snapshot) {
  const tasks = snapshot.slice(0, MAX_ROWS);
  const keep = new Set(tasks.map((task) => task.id));
  for (const id of [...rows.keys()]) if (!keep.has(id)) dropRow(id);
  for (const task of tasks) {
    const known = latest.get(task.id);
    const current = isOlder(task, known) ? known : task;
    latest.set(task.id, current);
    renderTask(current);
  }
  list.replaceChildren(...tasks.map((task) => rows.get(task.id)));
  afterDraw();
}

// ---- Launch form (operators only) --------------------------------------------------------

const form = document.getElementById('launch-form');
if (form) {
  const status = document.getElementById('launch-status');
  const button = document.getElementById('launch-button');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = form.elements.name.value;
    let kwargs;
    try {
      kwargs = JSON.parse(form.elements.kwargs.value || '{}');
    } catch (error) {
      status.textContent = `Keyword arguments are not valid JSON: ${error.message}`;
      return;
    }
    button.disabled = true;
    try {
      const answer = await api(form.dataset.url, {method: 'POST', body: {name, args: [], kwargs}});
      status.textContent = answer.ok
        ? `Launched ${name} as ${answer.data.id}`
        : `Not launched: ${answer.data.error || `HTTP ${answer.status}`}`;
      if (answer.ok && answer.data.task) accept(answer.data.task);
    } finally {
      button.disabled = false;
    }
  });
}

// ---- Live connection ---------------------------------------------------------------------

const socket = connectLive((live) => {
  // Every (re)connection: rejoin the dashboard room and redraw from fresh data.
  subscribe(live, {dashboard: true}, (ack) => resync(ack.tasks || []));
  loadOverview();
});
socket.on('tasks', (tasks) => tasks.forEach(accept));
socket.on('counts', (counts) => {
  if (renderCounts(counts)) refreshSoon();
});
// A worker coming online or going offline changes the warnings: re-read the overview soon.
const workerOnline = new Map();
socket.on('workers', (workers) => {
  let changed = false;
  for (const worker of workers) {
    const before = workerOnline.get(worker.hostname);
    workerOnline.set(worker.hostname, Boolean(worker.online));
    if (before === undefined ? worker.online && onlineCount === 0 : before !== Boolean(worker.online)) {
      changed = true;
    }
  }
  if (changed) refreshSoon();
});
socket.on('monitor', (status) => {
  monitorConnected = status.connected !== false;
  renderWarnings(lastWarnings);
});

loadOverview();
