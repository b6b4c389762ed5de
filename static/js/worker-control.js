// One worker card's reports and controls. The reports (pool, queues, registered tasks with their
// limits, active, reserved and scheduled tasks, configuration) are asked from the worker when the
// panel opens and on demand: GET /api/workers/<name>, which waits a bounded time for its answer.
// The operator's commands each need a typed reason and go through a confirmation that names the
// worker; the answer says what the worker replied, or that it did not answer in time.
// Worker data reaches the DOM through textContent and attributes only, never as HTML.

import {api, canAct, confirmAction, el, setText} from './common.js';

const TASKS_PAGE = '/tasks/';
let lists = 0;  // datalist ids: one per card, never derived from a worker's name

const plural = (n, word) => `${n} ${word}${Number(n) === 1 ? '' : 'es'}`;
const numberOrEmpty = (value) => (value === '' ? undefined : Number(value));
const secondsOrNull = (value) => (value === '' ? null : Number(value));

// What each button sends, and how its confirmation names the worker.
const COMMANDS = {
  grow: {path: '/pool/grow', label: 'Grow pool', title: 'Grow the pool?',
    body: (f) => ({n: numberOrEmpty(f.n.value)}),
    message: (w, b) => `Add ${plural(b.n, 'process')} to the pool of worker ${w}?`},
  shrink: {path: '/pool/shrink', label: 'Shrink pool', title: 'Shrink the pool?',
    body: (f) => ({n: numberOrEmpty(f.n.value)}),
    message: (w, b) => `Remove ${plural(b.n, 'idle process')} from the pool of worker ${w}?`},
  autoscale: {path: '/pool/autoscale', label: 'Set autoscale', title: 'Change the autoscale range?',
    body: (f) => ({max: numberOrEmpty(f.max.value), min: numberOrEmpty(f.min.value)}),
    message: (w, b) => `Let worker ${w} scale its pool between ${b.min} and ${b.max} processes?`},
  restart: {path: '/pool/restart', label: 'Restart pool', title: 'Restart the pool?',
    body: () => ({}),
    message: (w) => `Restart the pool processes of worker ${w}? Each ends after its current task.`},
  'add-consumer': {path: '/consumers/add', label: 'Consume queue', title: 'Consume a queue?',
    body: (f) => ({queue: f.queue.value}),
    message: (w, b) => `Make worker ${w} consume the queue “${b.queue}”?`},
  'cancel-consumer': {path: '/consumers/cancel', label: 'Stop consuming', title: 'Stop consuming a queue?',
    body: (f) => ({queue: f.queue.value}),
    message: (w, b) => `Make worker ${w} stop consuming the queue “${b.queue}”?`},
  'rate-limit': {path: '/rate-limit', label: 'Set rate limit', title: 'Set a rate limit?',
    body: (f) => ({task: f.task.value, rate_limit: f.rate.value}),
    message: (w, b) => `Limit ${b.task} to ${b.rate_limit} on worker ${w}?`},
  'time-limit': {path: '/time-limit', label: 'Set time limits', title: 'Set time limits?',
    body: (f) => ({task: f.task.value, soft: secondsOrNull(f.soft.value), hard: secondsOrNull(f.hard.value)}),
    message: (w, b) => `Give ${b.task} a soft limit of ${b.soft ?? 'none'} s and a hard limit of `
      + `${b.hard ?? 'none'} s on worker ${w}?`},
  shutdown: {path: '/shutdown', label: 'Warm shutdown', title: 'Shut this worker down?',
    body: () => ({}),
    message: (w) => `Warm shutdown of worker ${w}: it finishes its running tasks, then exits, and does not `
      + 'come back by itself.'},
};

function showText(value) {
  if (value == null) return '—';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function requestRow(state, request) {
  const id = request && request.id ? String(request.id) : '';
  const name = request && request.name ? String(request.name) : '(unknown task)';
  const nameCell = id ? el('a', {text: name, attrs: {href: TASKS_PAGE + encodeURIComponent(id)}})
    : el('span', {text: name});
  const args = [request && request.args, request && request.kwargs].filter((v) => v != null).map(showText);
  return el('tr', {attrs: {'data-state': state}}, [
    el('td', {text: state}), el('td', {}, [nameCell]), el('td', {}, [el('code', {text: id})]),
    el('td', {text: args.join(' ')}),
  ]);
}

export function attachControl(section, hostname, workersUrl) {
  const panel = section.querySelector('.worker-control');
  if (!panel) return;
  const url = `${workersUrl}/${encodeURIComponent(hostname)}`;
  const status = panel.querySelector('.reports-status');
  const form = panel.querySelector('form.controls');
  const outcome = panel.querySelector('.control-outcome');
  const datalist = el('datalist', {attrs: {id: `worker-tasks-${++lists}`}});
  let asking = 0;
  let busy = false;

  function renderReports(data) {
    const {pool, reports} = data;
    const stats = reports.stats || {};
    panel.querySelector('.pool-facts').hidden = !pool;
    panel.querySelector('.report-lists').hidden = false;
    if (pool) {
      setText(panel.querySelector('.pool-kind'), pool.kind || '—');
      const started = pool.max_concurrency != null && pool.max_concurrency !== pool.size
        ? ` (started with ${pool.max_concurrency})` : '';
      setText(panel.querySelector('.pool-size'), pool.size == null ? '—' : `${pool.size}${started}`);
      const scaler = pool.autoscaler;
      setText(panel.querySelector('.pool-autoscale'), scaler ? `${scaler.min}–${scaler.max}` : 'off');
      setText(panel.querySelector('.pool-processes'), pool.processes ? `PIDs ${pool.processes.join(', ')}`
        : pool.threads != null ? `${pool.threads} threads started` : '—');
      if (form && scaler && form.max.value === '') {
        form.max.value = scaler.max;
        form.min.value = scaler.min;
      }
    }
    setText(panel.querySelector('.pool-prefetch'), stats.prefetch_count ?? '—');
    const queues = (reports.active_queues || []).map((queue) => el('li', {text: queue && queue.name}));
    panel.querySelector('.report-queues').replaceChildren(...(queues.length ? queues : [el('li', {text: 'none'})]));
    const registered = reports.registered || [];
    panel.querySelector('.report-registered tbody').replaceChildren(...registered.map((task) => el('tr', {}, [
      el('td', {text: task.name}), el('td', {text: task.rate_limit ?? '—'}),
      el('td', {text: task.soft_time_limit ?? '—'}), el('td', {text: task.time_limit ?? '—'}),
    ])));
    datalist.replaceChildren(...registered.map((task) => el('option', {attrs: {value: task.name}})));
    const rows = [
      ...(reports.active || []).map((request) => requestRow('active', request)),
      ...(reports.reserved || []).map((request) => requestRow('reserved', request)),
      ...(reports.scheduled || []).map((entry) => requestRow('scheduled', entry && entry.request)),
    ];
    panel.querySelector('.report-requests tbody').replaceChildren(...rows);
    panel.querySelector('.report-requests').hidden = rows.length === 0;
    panel.querySelector('.report-requests-empty').hidden = rows.length > 0;
    const conf = reports.conf && typeof reports.conf === 'object' ? Object.entries(reports.conf) : [];
    panel.querySelector('.report-conf tbody').replaceChildren(...conf.map(([key, value]) => el('tr', {}, [
      el('th', {text: key, attrs: {scope: 'row'}}), el('td', {text: showText(value)}),
    ])));
  }

  async function loadReports() {
    const mine = ++asking;
    panel.dataset.reports = 'loading';
    setText(status, `Asking ${hostname}…`);
    const answer = await api(url);
    if (mine !== asking) return;
    const data = answer.data || {};
    if (answer.status === 200 && data.reports) {
      renderReports(data);
      panel.dataset.reports = 'answered';
      setText(status, `${hostname} answered in ${data.waited} s.`);
      return;
    }
    panel.dataset.reports = 'failed';
    setText(status, answer.status === 504 ? `No answer: ${data.error}`
      : `Could not ask (${answer.status || 'network'}): ${data.error || 'unknown error'}`);
  }

  panel.addEventListener('toggle', () => {
    if (panel.open && !panel.dataset.reports) loadReports();
  });
  panel.querySelector('.reports-refresh').addEventListener('click', () => loadReports());

  if (!form || !canAct) return;
  form.task.setAttribute('list', datalist.id);
  form.append(datalist);
  const buttons = [...form.querySelectorAll('button[data-command]')];
  form.addEventListener('submit', (event) => event.preventDefault());

  function show(text, state) {
    outcome.dataset.outcome = state;
    outcome.classList.toggle('error', !['ok', 'sent', 'cancelled', 'sending'].includes(state));
    setText(outcome, text);
  }

  function describe(command, answer) {
    const data = answer.data || {};
    const replies = data.replies && data.replies[hostname];
    const said = replies && typeof replies === 'object' ? replies.ok ?? replies.error : replies;
    if (data.outcome === 'ok') return `${command.label}: ${hostname} answered “${showText(said)}”.`;
    if (data.outcome === 'sent') {
      return `${command.label} sent to ${hostname}: ${data.offline ? 'it went offline.'
        : 'it stops once its running tasks end.'}`;
    }
    if (data.outcome === 'no answer') return `${command.label}: no answer (${answer.status}). ${data.error}`;
    return `${command.label} refused (${answer.status || 'network'}): ${data.error || 'unknown error'}`;
  }

  async function run(name) {
    const command = COMMANDS[name];
    if (busy || !command) return;
    const reason = form.reason.value;
    if (!reason.trim()) {
      show('Type a reason first: it is written to the audit log with the command.', 'invalid');
      form.reason.focus();
      return;
    }
    const body = command.body(form);
    const confirmed = await confirmAction(command.title, `${command.message(hostname, body)} Reason: ${reason}`);
    if (!confirmed) {
      show(`${command.label} cancelled.`, 'cancelled');
      return;
    }
    busy = true;
    buttons.forEach((button) => { button.disabled = true; });
    show(`${command.label}: asking ${hostname}…`, 'sending');
    const answer = await api(url + command.path, {method: 'POST', body: {...body, reason}});
    busy = false;
    buttons.forEach((button) => { button.disabled = false; });
    show(describe(command, answer), answer.data && answer.data.outcome ? answer.data.outcome : `http-${answer.status}`);
    // A pool takes a moment to change: ask again shortly after, while the panel is open.
    if (answer.ok && panel.open) setTimeout(loadReports, 1000);
  }

  for (const button of buttons) button.addEventListener('click', () => run(button.dataset.command));
}
