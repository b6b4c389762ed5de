// One task's page: everything its record holds, live from its Socket.IO room, and the
// operator's actions (each behind a confirmation that names the task).
// Task data goes into the DOM as text and attributes only.
import {
  api, canAct, confirmAction, connectLive, el, formatDuration, formatTime, frameBatcher, progressBar,
  progressText, renderBar, setText, subscribe,
} from './common.js';
import {lineChart} from './charts.js';
import {logPane} from './logpane.js';

const ENDED = new Set(['finished', 'failed', 'revoked', 'lost', 'abandoned', 'replayed', 'skipped', 'expired']);
const TIMELINE = [
  ['created_at', 'Recorded'], ['sent_at', 'Sent'], ['received_at', 'Received'], ['started_at', 'Started'],
  ['revoke_requested_at', 'Revoke requested'], ['finished_at', 'Finished'], ['updated_at', 'Last change'],
];

const page = document.getElementById('task-page');
const taskId = page.dataset.taskId;
const taskBase = page.dataset.taskBase;
const $ = (id) => document.getElementById(id);
const bar = progressBar('Progress of the task');
$('bar-slot').append(bar);

let current = null;       // the task JSON on screen
let drawn = {};           // signatures of the parts rebuilt only when they change

// ---- rendering -----------------------------------------------------------------------------

function taskLink(id) {
  return el('a', {text: id, attrs: {href: taskBase + encodeURIComponent(id)}});
}

function describe(task) {
  return `task ${task.name || '(unnamed)'} (${task.id})`;
}

function once(key, value, build) {
  const signature = JSON.stringify(value);
  if (drawn[key] === signature) return;
  drawn[key] = signature;
  build();
}

function render(task) {
  if (current && task.updated_at != null && current.updated_at != null
      && task.updated_at < current.updated_at) return;  // an older copy lost a race
  current = task;
  const unknown = task.status === 'unknown';
  const name = task.name || (unknown ? 'Unknown task' : '(unnamed task)');
  setText($('task-name'), name);
  document.title = `${name} · Task · Pulse`;
  const badge = $('task-status');
  badge.dataset.status = task.status;
  setText(badge, task.status);
  $('unknown-notice').hidden = !unknown;
  $('task-body').hidden = unknown;
  if (unknown) return;

  renderFields(task);
  renderBar(bar, task);
  const message = task.progress && task.progress.message ? task.progress.message : '';
  setText($('progress-text'), [progressText(task), message].filter(Boolean).join(' — ')
    || 'No progress reported.');
  renderChart(task);
  renderFailure(task.failure);
  renderResult(task);
  renderTimeline(task);
  once('relations', relationsOf(task), () => renderRelations(task));
  renderActions(task);
}

function renderFields(task) {
  const fields = {
    name: task.name, status: task.status, state: task.state, worker: task.worker, queue: task.queue,
    retries: task.retries, goal: task.goal, args: task.args, kwargs: task.kwargs,
    'revoke-reason': task.revoke_reason, 'last-error': task.last_error, 'lost-reason': task.lost_reason,
    runtime: task.runtime != null ? formatDuration(task.runtime)
      : task.started_at != null && !ENDED.has(task.status)
        ? `${formatDuration(Math.max(0, Date.now() / 1000 - task.started_at))} so far` : null,
  };
  for (const [key, value] of Object.entries(fields)) {
    const node = $(`field-${key}`);
    const missing = value == null || value === '';
    node.classList.toggle('none', missing);
    setText(node, missing ? '—' : value);
  }
}

function renderChart(task) {
  const history = Array.isArray(task.history) ? task.history : [];
  const total = task.progress && task.progress.total != null ? task.progress.total : null;
  once('chart', [history, total], () => {
    const svg = $('progress-chart');
    lineChart(svg, history, {yMax: total});
    svg.toggleAttribute('hidden', history.length < 2);  // an empty box says nothing; the note does
    if (history.length < 2) {
      svg.setAttribute('aria-label', 'Progress over time: not enough reports for a chart yet');
      setText($('chart-note'), history.length ? 'One progress report so far.' : 'No progress reports yet.');
      return;
    }
    const [t0, first] = history[0];
    const [t1, last] = history[history.length - 1];
    const of = total != null ? ` of ${total}` : '';
    const summary = `${history.length} reports, from ${first} to ${last}${of} over ${formatDuration(t1 - t0)}`;
    svg.setAttribute('aria-label', `Progress over time: ${summary}`);
    setText($('chart-note'), `Progress over time: ${summary}.`);
  });
}

function renderFailure(failure) {
  $('failure').hidden = !failure;
  if (!failure) return;
  setText($('exc-type'), failure.exc_type || 'Error');
  setText($('exc-message'), failure.exc_message);
  const details = failure.details && typeof failure.details === 'object' ? failure.details : {};
  once('details', details, () => {
    const rows = Object.entries(details).map(([key, value]) => el('tr', {}, [
      el('th', {text: key, attrs: {scope: 'row'}}),
      el('td', {text: typeof value === 'string' ? value : JSON.stringify(value)}),
    ]));
    $('failure-details').tBodies[0].replaceChildren(...rows);
    $('failure-details').hidden = rows.length === 0;
  });
  $('traceback-box').hidden = !failure.traceback;
  once('traceback', failure.traceback, () => {
    const pre = $('traceback');
    setText(pre, failure.traceback);
    pre.scrollTop = pre.scrollHeight;  // the frames that matter, and the error, come last
  });
}

function renderResult(task) {
  const box = $('result-box');
  box.hidden = task.state !== 'SUCCESS';
  if (!box.hidden) setText($('result'), JSON.stringify(task.result, null, 2));
}

function renderTimeline(task) {
  const list = $('timeline');
  if (!list.children.length) {
    for (const [key, label] of TIMELINE) {
      list.append(el('li', {attrs: {'data-key': key}}, [
        el('span', {class: 'when-label', text: label}), el('time', {class: 'when'}), el('span', {class: 'offset'}),
      ]));
    }
  }
  const start = task.created_at ?? task.sent_at;
  for (const item of list.children) {
    const at = task[item.dataset.key];
    const time = item.querySelector('time');
    item.classList.toggle('none', at == null);
    setText(time, at == null ? '—' : formatTime(at));
    if (at == null) time.removeAttribute('datetime');
    else time.setAttribute('datetime', new Date(at * 1000).toISOString());
    const offset = at != null && start != null && at > start ? `+${formatDuration(at - start)}` : '';
    setText(item.querySelector('.offset'), offset);
  }
}

function relationsOf(task) {
  return [task.parent_id, task.root_id, task.children, task.group_id, task.chain, task.chain_of,
    task.replay_of, task.replayed_by];
}

function renderRelations(task) {
  const entry = (label, content) => [el('dt', {text: label}), el('dd', {}, content)];
  const one = (id) => (id ? [taskLink(id)] : [el('span', {class: 'none', text: '—'})]);
  const many = (ids, tag) => (Array.isArray(ids) && ids.length
    ? [el(tag, {class: 'id-list'}, ids.map((id) => el('li', {}, [taskLink(id)])))]
    : [el('span', {class: 'none', text: '—'})]);
  const group = task.group_id ? [el('code', {text: task.group_id})] : [el('span', {class: 'none', text: '—'})];
  $('relations').replaceChildren(
    ...entry('Parent', one(task.parent_id)),
    ...entry('Root', task.root_id === task.id ? [el('span', {text: 'this task'})] : one(task.root_id)),
    ...entry('Children', many(task.children, 'ul')),
    ...entry('Group', group),
    ...entry('Chain steps after this one', many(task.chain, 'ol')),
    ...entry('Chain started by', one(task.chain_of)),
    ...entry('Replay of', one(task.replay_of)),
    ...entry('Replayed by', one(task.replayed_by)),
  );
}

// ---- actions -------------------------------------------------------------------------------

const ACTIONS = {
  revoke: {
    allowed: (t) => t.can_revoke, url: page.dataset.revokeUrl, body: {terminate: false},
    title: 'Revoke this task?',
    message: (t) => `Revoke ${describe(t)}? If it has not started, it will not run. `
      + 'A task already running is not interrupted: use Terminate for that.',
  },
  terminate: {
    allowed: (t) => t.can_revoke && t.status === 'running', url: page.dataset.revokeUrl,
    body: {terminate: true}, title: 'Terminate this task?',
    message: (t) => `Terminate ${describe(t)}? Its worker process is sent SIGTERM now; the work in progress is lost.`,
  },
  replay: {
    allowed: (t) => t.can_replay, url: page.dataset.replayUrl, title: 'Replay this task?',
    message: (t) => `Replay ${describe(t)}? A new task runs with the same name, arguments and queue.`,
  },
  skip: {
    allowed: (t) => t.can_skip, url: page.dataset.skipUrl, title: 'Skip this task?',
    message: (t) => `Skip ${describe(t)}? It is marked skipped and will not be rerun.`,
  },
  forget: {
    allowed: (t) => ENDED.has(t.status), url: page.dataset.forgetUrl, method: 'DELETE',
    title: 'Forget this task?',
    message: (t) => `Forget ${describe(t)}? Celery's stored result is deleted; Pulse keeps the record, as expired.`,
  },
};
let busy = false;

function actionButtons() {
  return [...document.querySelectorAll('#actions button[data-action]')];
}

function renderActions(task) {
  if (!canAct || !$('actions')) return;
  const buttons = actionButtons();
  const hadFocus = buttons.includes(document.activeElement);
  let shown = 0;
  for (const button of buttons) {
    button.hidden = !ACTIONS[button.dataset.action].allowed(task);
    button.disabled = busy;
    if (!button.hidden) shown += 1;
  }
  $('no-actions').hidden = shown > 0;
  // A button that just went away must not leave keyboard focus on nothing.
  if (hadFocus && document.activeElement && document.activeElement.hidden) $('actions-title').focus();
}

function showOutcome(text, isError, link) {
  const status = $('action-status');
  status.classList.toggle('error', isError);
  status.replaceChildren(el('span', {text}), ...(link ? [' ', link] : []));
}

async function act(verb) {
  const action = ACTIONS[verb];
  const task = current;
  if (!task || busy || !action.allowed(task)) return;
  const label = verb[0].toUpperCase() + verb.slice(1);
  if (!(await confirmAction(action.title, action.message(task)))) {
    showOutcome(`${label} cancelled.`, false);
    return;
  }
  busy = true;
  renderActions(task);
  showOutcome(`${label}: sending…`, false);
  const answer = await api(action.url, {method: action.method || 'POST', body: action.body});
  busy = false;
  if (!answer.ok) {
    showOutcome(`${label} refused (${answer.status || 'no answer'}): ${answer.data.error || 'unknown error'}`, true);
    renderActions(current);
    return;
  }
  const updated = answer.data;
  if (updated && updated.id === taskId) draw('task', updated);
  if (verb === 'replay' && updated.replayed_by) {
    showOutcome('Replayed: the new task is', false, taskLink(updated.replayed_by));
  } else if (verb === 'revoke' && updated.status !== 'revoked') {
    showOutcome(`Revoke requested: the status becomes revoked when a worker confirms (now ${updated.status}).`, false);
  } else {
    showOutcome(`${label}: done, the status is now ${updated.status}.`, false);
  }
  renderActions(current);
}

if (canAct && $('actions')) {
  for (const button of actionButtons()) button.addEventListener('click', () => act(button.dataset.action));
}

// ---- live ----------------------------------------------------------------------------------

const draw = frameBatcher((tasks) => tasks.forEach(render));

// The runtime of a running task ticks between pushes.
setInterval(() => {
  if (current && current.started_at != null && current.runtime == null && !ENDED.has(current.status)) {
    requestAnimationFrame(() => renderFields(current));
  }
}, 1000);

const logs = logPane($('log-box'), {url: page.dataset.logsUrl});

const socket = connectLive((live) => {
  // Every (re)connection: rejoin the room; the ack's snapshot redraws the page from scratch, and
  // the log pane reads the lines that came meanwhile.
  subscribe(live, {task: taskId}, (ack) => {
    if (ack.task && ack.task.id === taskId) draw('task', ack.task);
    logs.sync();
  });
});
socket.on('task', (task) => {
  if (task && task.id === taskId) draw('task', task);
});
socket.on('log', (packet) => {
  if (packet && packet.id === taskId) logs.onLog(packet);
});
