// The analytics page: per task name, the tasks that ended in the last hour or day, with counts,
// failure rate and runtime and queue wait percentiles (GET /api/analytics); choosing a name shows
// its two histograms. Read on load, on every (re)connection, when the window changes and every
// 15 s while the tab is visible (the figures are per minute: no push is needed).
// Task names reach the DOM through textContent and attributes only, never as HTML.

import {api, connectLive, el, formatDuration, formatTime, refresher, setText} from './common.js';
import {barChart} from './charts.js';

const root = document.getElementById('analytics-page');
const API = root.dataset.api;
const TASKS_URL = root.dataset.tasksUrl;
const POLL_EVERY_MS = 15000;
const LABELS = new Set(['other', 'unknown']);  // counts under no one name: no task list to link to

const body = document.querySelector('#analytics tbody');
const empty = document.getElementById('analytics-empty');
const updated = document.getElementById('analytics-updated');
const errorLine = document.getElementById('analytics-error');
const histograms = document.getElementById('histograms');
const rows = new Map();  // name -> {tr, data}
let chosen = null;       // the name whose histograms are shown
let bounds = [];

function windowChosen() {
  return document.querySelector('input[name="window"]:checked').value;
}

function seconds(value) {
  return value == null ? '—' : formatDuration(value);
}

function percent(rate) {
  return rate == null ? '—' : `${(rate * 100).toFixed(rate > 0 && rate < 0.01 ? 2 : 1)}%`;
}

function rowFor(name) {
  let entry = rows.get(name);
  if (!entry) {
    const button = el('button', {class: 'link name-button', text: name,
      attrs: {type: 'button', 'aria-label': `Show the distribution of ${name}`}});
    button.addEventListener('click', () => choose(name));
    const cells = ['count', 'succeeded', 'failed', 'failure-rate', 'runtime-p50', 'runtime-p90',
      'runtime-p99', 'wait-p50', 'wait-p90', 'wait-p99'].map((kind) => el('td', {class: `number ${kind}`}));
    const tr = el('tr', {attrs: {'data-name': name}},
      [el('th', {class: 'task-name', attrs: {scope: 'row'}}, [button]), ...cells]);
    entry = {tr, data: null};
    rows.set(name, entry);
  }
  return entry;
}

function render(entry, data) {
  entry.data = data;
  const cell = (kind) => entry.tr.querySelector(`.${kind}`);
  setText(cell('count'), data.count);
  setText(cell('succeeded'), data.succeeded);
  setText(cell('failed'), data.failed);
  setText(cell('failure-rate'), percent(data.failure_rate));
  entry.tr.classList.toggle('failing', data.failed > 0);
  for (const [prefix, figures] of [['runtime', data.runtime], ['wait', data.queue_wait]]) {
    for (const q of ['p50', 'p90', 'p99']) setText(cell(`${prefix}-${q}`), seconds(figures[q]));
  }
}

// Bucket labels: "≤ 250 ms" for a bound, "> 2 h 46 min" above the last one.
function bucketLabels() {
  return [...bounds.map((bound) => `≤ ${formatDuration(bound)}`), `> ${formatDuration(bounds[bounds.length - 1])}`];
}

function drawHistogram(id, what, figures) {
  const svg = document.getElementById(`${id}-chart`);
  const labels = bucketLabels();
  // Only the span from the first to the last bucket holding anything, so the bars stay readable.
  const used = figures.buckets.map((count, i) => (count ? i : -1)).filter((i) => i >= 0);
  const from = used.length ? used[0] : 0;
  const to = used.length ? used[used.length - 1] : 0;
  barChart(svg, labels.slice(from, to + 1),
    [{name: 'tasks', class: 'bucket', values: figures.buckets.slice(from, to + 1)}], {height: 100});
  svg.setAttribute('aria-label', figures.count
    ? `${what}: ${figures.count} tasks, median ${seconds(figures.p50)}, 90th percentile ${seconds(figures.p90)}, `
      + `99th percentile ${seconds(figures.p99)}`
    : `${what}: no task measured`);
  setText(document.getElementById(`${id}-low`), figures.count ? labels[from] : '');
  setText(document.getElementById(`${id}-high`), figures.count ? labels[to] : '');
}

function showHistograms() {
  const entry = chosen == null ? null : rows.get(chosen);
  if (!entry || !entry.data) {
    histograms.hidden = true;
    return;
  }
  histograms.hidden = false;
  setText(document.getElementById('histograms-name'), chosen);
  const link = document.getElementById('histograms-tasks');
  link.hidden = LABELS.has(chosen);
  link.href = `${TASKS_URL}?${new URLSearchParams({name: chosen})}`;
  drawHistogram('runtime', 'Runtime', entry.data.runtime);
  drawHistogram('wait', 'Queue wait', entry.data.queue_wait);
  for (const {tr} of rows.values()) tr.classList.toggle('chosen', tr.dataset.name === chosen);
}

function choose(name) {
  chosen = name;
  showHistograms();
  histograms.scrollIntoView({block: 'nearest'});
}

async function read() {
  const span = windowChosen();
  const answer = await api(`${API}?window=${encodeURIComponent(span)}`);
  if (span !== windowChosen()) return;  // the window changed while this read was under way
  if (!answer.ok) {
    errorLine.hidden = false;
    setText(errorLine, `Could not read the analytics: ${answer.data.error || `HTTP ${answer.status}`}`);
    updated.classList.add('stale');
    return;
  }
  errorLine.hidden = true;
  updated.classList.remove('stale');
  bounds = answer.data.bounds;
  const seen = new Set();
  const ordered = [];
  for (const data of answer.data.names) {
    const entry = rowFor(data.name);
    render(entry, data);
    seen.add(data.name);
    ordered.push(entry.tr);
  }
  for (const [name, entry] of rows) {
    if (!seen.has(name)) {
      entry.tr.remove();
      rows.delete(name);
    }
  }
  body.replaceChildren(...ordered);
  empty.hidden = ordered.length > 0;
  setText(updated, `${answer.data.window === 3600 ? 'Last hour' : 'Last day'} · ${ordered.length} `
    + `task name${ordered.length === 1 ? '' : 's'} · updated ${formatTime(answer.data.at)}`);
  showHistograms();
}

const refresh = refresher(read, {every: POLL_EVERY_MS, soonEvery: 1000});
for (const input of document.querySelectorAll('input[name="window"]')) {
  input.addEventListener('change', () => refresh.load());
}
refresh.load();
connectLive(() => refresh.load());
