// The periodic tasks page: every entry of the app's beat_schedule with its schedule in words,
// arguments, last runs (from the registry), whether the last one failed, and the next run.
// Read from GET /api/periodic on load, on every (re)connection, when a task of an entry's name
// changes (the dashboard room's pushes, at most every 2 s), and every 30 s for the next runs.
// "Run now" (operator) asks for a reason and a confirmation that names the entry, then links to
// the task it sent. Entry and task data reach the DOM through textContent only, never as HTML.

import {
  api, canAct, confirmAction, connectLive, el, formatAgo, formatDuration, formatTime, setText, subscribe,
} from './common.js';

const container = document.getElementById('periodic');
const API = container.dataset.api;
const TASK_BASE = container.dataset.taskBase;
const template = document.getElementById('entry-template');
const summaryLine = document.getElementById('periodic-summary');
const errorLine = document.getElementById('periodic-error');
const outcome = document.getElementById('periodic-outcome');
const emptyState = document.getElementById('periodic-empty');
const REFRESH_MS = 30000;
const PUSH_MS = 2000;

const cards = new Map();  // entry name -> <section>
let taskNames = new Set();
let busy = false;
let loading = null;
let pushTimer = 0;

function taskLink(id) {
  return el('a', {text: id, attrs: {href: `${TASK_BASE}${encodeURIComponent(id)}`}});
}

function argsText(entry) {
  const args = Array.isArray(entry.args) ? entry.args : [entry.args];
  const parts = args.map((value) => JSON.stringify(value));
  for (const [key, value] of Object.entries(entry.kwargs || {})) parts.push(`${key}=${JSON.stringify(value)}`);
  return parts.length ? parts.join(', ') : 'none';
}

function nextText(entry, now) {
  if (entry.next_run_at == null) return 'unknown for this schedule';
  if (entry.next_run_at <= now + 1) return 'due now';
  return `${formatTime(entry.next_run_at)} (in ${formatDuration(Math.round(entry.next_run_at - now))}, from ${entry.next_run_from})`;
}

function cardFor(name) {
  let section = cards.get(name);
  if (!section) {
    section = template.content.firstElementChild.cloneNode(true);
    section.dataset.entry = name;
    section.setAttribute('aria-label', `Periodic task ${name}`);
    setText(section.querySelector('.entry-name'), name);
    const form = section.querySelector('.entry-run');
    if (form) form.addEventListener('submit', (event) => { event.preventDefault(); runNow(name, section); });
    cards.set(name, section);
  }
  return section;
}

function renderRuns(section, runs) {
  const table = section.querySelector('.entry-runs');
  const body = table.querySelector('tbody');
  table.hidden = runs.length === 0;
  section.querySelector('.entry-no-runs').hidden = runs.length > 0;
  body.replaceChildren(...runs.map((run) => el('tr', {attrs: {'data-id': run.id, 'data-status': run.status}}, [
    el('td', {}, [taskLink(run.id)]),
    el('td', {}, [el('span', {class: 'badge', text: run.status, attrs: {'data-status': run.status}})]),
    el('td', {text: run.sent_at != null ? formatAgo(run.sent_at) : '', attrs: {title: formatTime(run.sent_at)}}),
    el('td', {text: formatDuration(run.runtime)}),
    el('td', {text: run.matched_by === 'name' ? 'entry name' : 'task and arguments'}),
  ])));
}

function render(data) {
  const now = data.now;
  const seen = new Set();
  taskNames = new Set();
  let previous = null;
  for (const entry of data.entries) {
    seen.add(entry.name);
    if (entry.task) taskNames.add(entry.task);
    const section = cardFor(entry.name);
    section.dataset.lastFailed = String(entry.last_failed);
    const state = section.querySelector('.entry-state');
    const label = entry.last_runs.length === 0 ? 'no run yet' : entry.last_failed ? 'last run failed'
      : `last run ${entry.last_runs[0].status}`;
    state.dataset.state = entry.last_failed ? 'failed' : entry.last_runs.length ? 'ok' : 'none';
    setText(state, label);
    setText(section.querySelector('.entry-task'), entry.task || '(no task)');
    setText(section.querySelector('.entry-schedule'), entry.schedule);
    setText(section.querySelector('.entry-args'), argsText(entry));
    setText(section.querySelector('.entry-last'), entry.last_run_at == null ? 'never recorded'
      : `${formatAgo(entry.last_run_at)} (${formatTime(entry.last_run_at)})`);
    setText(section.querySelector('.entry-next'), nextText(entry, now));
    const button = section.querySelector('.entry-run-button');
    if (button) button.disabled = busy || !entry.task;
    renderRuns(section, entry.last_runs);
    // In the schedule's order, moving a card only when it is out of place: a moved card would lose
    // the focus of a reason being typed.
    const expected = previous ? previous.nextElementSibling : container.firstElementChild;
    if (expected !== section) container.insertBefore(section, expected);
    previous = section;
  }
  for (const [name, section] of cards) {
    if (!seen.has(name)) { section.remove(); cards.delete(name); }
  }
  emptyState.hidden = data.entries.length > 0;
  const failing = data.entries.filter((entry) => entry.last_failed).length;
  setText(summaryLine, `${data.entries.length} ${data.entries.length === 1 ? 'entry' : 'entries'}`
    + `${failing ? `, ${failing} whose last run failed` : ''} · times in your browser's zone; crontabs in ${data.timezone}`);
}

async function load() {
  if (loading) return loading;
  loading = (async () => {
    const answer = await api(API);
    loading = null;
    if (!answer.ok) {
      errorLine.hidden = false;
      setText(errorLine, `Could not read the schedule (${answer.status || 'no answer'}): ${answer.data.error || ''}`);
      return;
    }
    errorLine.hidden = true;
    render(answer.data);
  })();
  return loading;
}

async function runNow(name, section) {
  if (!canAct || busy) return;
  const input = section.querySelector('.entry-reason');
  const reason = input.value.trim();
  if (!reason) {
    setText(outcome, `Give a reason to run ${name} now.`);
    input.focus();
    return;
  }
  const task = section.querySelector('.entry-task').textContent;
  if (!(await confirmAction(`Run “${name}” now?`,
    `This sends ${task} now with the entry's arguments, outside its schedule. Reason: ${reason}`))) {
    setText(outcome, `Run of ${name} cancelled.`);
    return;
  }
  busy = true;
  for (const button of container.querySelectorAll('.entry-run-button')) button.disabled = true;
  setText(outcome, `Running ${name}: sending…`);
  const answer = await api(`${API}/${encodeURIComponent(name)}/run`, {method: 'POST', body: {reason}});
  busy = false;
  if (!answer.ok) {
    setText(outcome, `Run of ${name} refused (${answer.status || 'no answer'}): ${answer.data.error || 'unknown error'}`);
  } else {
    input.value = '';
    outcome.replaceChildren(`Sent ${name}: task `, taskLink(answer.data.id), '.');
  }
  if (loading) await loading;  // a read begun before the run would not show it
  await load();
}

function taskPushed(tasks) {
  if (pushTimer || !tasks.some((task) => taskNames.has(task.name))) return;
  pushTimer = setTimeout(() => { pushTimer = 0; load(); }, PUSH_MS);
}

const socket = connectLive((live) => subscribe(live, {dashboard: true}, () => load()));
socket.on('tasks', taskPushed);
setInterval(load, REFRESH_MS);
load();
