// Bulk actions by filter, shared by the Tasks page and the failure inbox (operators only: a
// viewer's page builds none of it). A dry run says how many tasks the filters select and how many
// the action applies to now; running asks for a reason and a confirmation that names the action
// and the count, then follows the job. The job is also a task record of its own (same id), so its
// bar is Pulse's own progress bar, fed by that record's pushes; its counts come from the job
// (GET /api/bulk/<id>), re-read soon after each push and every second until it ends, which also
// keeps it moving while the live connection is down. Ids, reasons and errors go in as text only.
//
// Exports (the containers carry data-bulk-api, data-task-api and data-task-base):
//   bulkPanel(container, {getFilters, describe, actions, onJob, onEnd})
//     -> {dryRun, setAction, reset, follow, focus}
//   recentJobs(container, {limit, onFollow}) -> {load, soon}
//   followJobs(socket): once per page, with the page's live connection
//   syncJobs(socket): in the page's onSync, so followed jobs rejoin their rooms after a reconnection

import {
  api, confirmAction, el, formatAgo, formatTime, progressBar, refresher, renderBar, setText, subscribe,
} from './common.js';

export const BULK_ACTIONS = ['revoke', 'terminate', 'replay', 'skip', 'forget'];
const DONE_AS = {revoke: 'revoked', terminate: 'terminated', replay: 'replayed', skip: 'skipped', forget: 'forgotten'};
const EFFECT = {
  revoke: 'A task that has not started will not run; one already running is not interrupted (terminate does that).',
  terminate: 'Their worker processes are sent SIGTERM; the work in progress is lost.',
  replay: 'Each runs again as a new task with the same name, arguments and queue.',
  skip: 'They are marked skipped and will not be rerun.',
  forget: "Celery's stored results are deleted; Pulse keeps the records, as expired.",
};
const JOB_ENDS = new Set(['finished', 'cancelled', 'failed']);
// The job's status as a badge colour of a task status.
const JOB_BADGE = {queued: 'scheduled', running: 'running', finished: 'finished', cancelled: 'revoked', failed: 'failed'};
const JOB_STATE = {queued: 'Queued, waiting for a server', running: 'Running', finished: 'Finished',
  cancelled: 'Cancelled', failed: 'Stopped'};
const POLL_MS = 1000;
const SOON_MS = 250;
const KEEP_VIEWS = 5;
const OUTCOMES_SHOWN = 500;
const REPLAYED_AS = /^acted: replayed as (\S+)$/;

let liveSocket = null;
const following = new Map();  // job id -> its view, while on the page
const recentLists = new Set();

const capital = (word) => word[0].toUpperCase() + word.slice(1);
const plural = (count, word) => `${count} ${word}${count === 1 ? '' : 's'}`;
const refusal = (answer) => `${answer.status || 'no answer'}: ${answer.data.error || 'unknown error'}`;

// The filters as the API takes them: text values, the empty ones left out.
function cleanFilters(filters) {
  const clean = {};
  for (const [key, value] of Object.entries(filters || {})) {
    const text = value == null ? '' : String(value).trim();
    if (text) clean[key] = text;
  }
  return clean;
}

// "selected by status=failed name=x": how the confirmation names the selection by default.
export function selectedBy(filters) {
  const parts = Object.entries(filters).map(([key, value]) => `${key}=${value}`);
  return parts.length ? `selected by ${parts.join(' ')}` : 'selected by no filter: every task recorded';
}

function taskLink(taskBase, id, text) {
  return el('a', {text: text ?? id, attrs: {href: taskBase + encodeURIComponent(id)}});
}

// ---- live ------------------------------------------------------------------------------------

// Once per page, with its live connection: a followed job's record comes from its own room (every
// change) and from the dashboard room's batches; a bulk record in a batch also refreshes the
// lists of recent jobs.
export function followJobs(socket) {
  liveSocket = socket;
  socket.on('task', (task) => {
    const view = task && following.get(task.id);
    if (view) view.pushed(task);
  });
  socket.on('tasks', (tasks) => {
    if (!Array.isArray(tasks)) return;
    let bulk = false;
    for (const task of tasks) {
      if (!task || typeof task.id !== 'string' || !task.id.startsWith('bulk-')) continue;
      bulk = true;
      const view = following.get(task.id);
      if (view) view.pushed(task);
    }
    if (bulk) recentLists.forEach((list) => list.soon());
  });
}

// In the page's onSync: a reconnection left the rooms, and what changed meanwhile sent no push.
export function syncJobs(socket) {
  for (const view of following.values()) view.join(socket);
  recentLists.forEach((list) => list.soon());
}

// ---- one job, followed -----------------------------------------------------------------------

function jobView(job, {apiBase, taskApi, taskBase, onEnd}) {
  const jobUrl = `${apiBase}/${encodeURIComponent(job.id)}`;
  const bar = progressBar(`Progress of bulk ${job.action} ${job.id}`);
  const badge = el('span', {class: 'badge'});
  const state = el('p', {class: 'bulk-job-state', attrs: {role: 'status', 'aria-live': 'polite'}});
  const alert = el('p', {class: 'error bulk-job-error', attrs: {role: 'alert'}});
  const reasonId = `bulk-cancel-reason-${job.id}`;
  const cancelReason = el('input', {attrs: {id: reasonId, name: 'reason', maxlength: 500, autocomplete: 'off',
    required: ''}});
  const cancelButton = el('button', {class: 'danger', text: 'Cancel this bulk action…', attrs: {type: 'submit'}});
  const cancelForm = el('form', {class: 'bulk-cancel'}, [
    el('label', {text: 'Reason to cancel', attrs: {for: reasonId}}), cancelReason, cancelButton]);
  const outcomesButton = el('button', {class: 'secondary', text: 'Show each task’s outcome',
    attrs: {type: 'button', 'aria-expanded': 'false'}});
  const outcomes = el('div', {class: 'bulk-outcomes', attrs: {hidden: ''}});
  const node = el('article', {class: 'bulk-job', attrs: {'data-job-id': job.id,
    'aria-label': `Bulk ${job.action} ${job.id}`}}, [
    el('p', {class: 'bulk-job-head'}, [
      badge, ' ',
      el('a', {class: 'bulk-job-link', text: `${capital(job.action)} of ${plural(job.total, 'task')}`,
        attrs: {href: job.url || taskBase + encodeURIComponent(job.id)}}), ' ',
      el('code', {class: 'bulk-job-id', text: job.id}),
    ]),
    el('p', {class: 'hint bulk-job-meta', text: `By ${job.who}, ${formatTime(job.created_at)}. Reason: ${job.reason}`}),
    bar, state, alert, cancelForm, outcomesButton, outcomes,
  ]);

  let current = job;
  let record = null;       // the job's task record last drawn
  let timer = 0;
  let reading = false;
  let again = false;
  let soonTimer = 0;
  let ended = false;

  function pushed(task) {
    // A batch's summary and the room's full copy race: never let an older copy win.
    if (record && task.updated_at != null && record.updated_at != null && task.updated_at < record.updated_at) return;
    record = task;
    renderBar(bar, task);
    soon();
  }

  function show(data) {
    current = data;
    badge.dataset.status = JOB_BADGE[data.status] || 'scheduled';
    setText(badge, data.status);
    let text = `${JOB_STATE[data.status] || capital(data.status)}: ${data.done} of ${plural(data.total, 'task')} `
      + `gone through; ${data.acted} acted, ${data.not_eligible} not eligible, ${data.errors} errors, `
      + `${data.uncertain} uncertain.`;
    if (data.interrupted) text += ' Its server stopped; the next server to look resumes it.';
    if (data.error) text += ` ${data.error}`;
    setText(state, text);
    const over = JOB_ENDS.has(data.status);
    if (over && cancelForm.contains(document.activeElement)) outcomesButton.focus();
    cancelForm.hidden = over;
  }

  async function readRecord() {
    const answer = await api(`${taskApi}/${encodeURIComponent(job.id)}`);
    if (answer.ok && answer.data && answer.data.id === job.id) pushed(answer.data);
  }

  async function read() {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    clearTimeout(timer);
    const answer = await api(jobUrl);
    if (answer.ok) show(answer.data);
    setText(alert, answer.ok ? ''
      : `Could not read the bulk action (${refusal(answer)}); what is shown may be out of date.`);
    const over = answer.ok && JOB_ENDS.has(answer.data.status);
    // Without the live connection nothing pushes the record; once the job ended, make sure the bar
    // shows how (its last push may have gone while the page was away).
    if (!liveSocket || !liveSocket.connected || over) await readRecord();
    reading = false;
    if (over && !ended) {
      ended = true;
      onEnd(current);
    }
    if (again) {
      again = false;
      read();
    } else if (!over) {
      timer = setTimeout(read, document.hidden ? POLL_MS * 5 : POLL_MS);
    }
  }

  function soon() {
    if (soonTimer || ended) return;
    soonTimer = setTimeout(() => {
      soonTimer = 0;
      read();
    }, SOON_MS);
  }

  function join(socket) {
    subscribe(socket, {task: job.id}, (ack) => {
      if (ack.task && ack.task.id === job.id) pushed(ack.task);
    });
    if (ended) readRecord();
    else soon();
  }

  function stop() {
    clearTimeout(timer);
    clearTimeout(soonTimer);
    ended = true;
    following.delete(job.id);
    if (liveSocket && liveSocket.connected) liveSocket.emit('unsubscribe', {task: job.id});
  }

  cancelForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const reason = cancelReason.value.trim();
    if (!reason) {
      setText(alert, 'Say why you cancel it: the reason goes into the audit log.');
      cancelReason.focus();
      return;
    }
    const left = Math.max(0, current.total - current.done);
    const confirmed = await confirmAction(`Cancel this bulk ${current.action}?`,
      `Stop the ${current.action} of ${plural(current.total, 'task')} (${current.id})? The ${left} not gone `
      + `through yet are left as they are; those already ${DONE_AS[current.action] || 'acted on'} stay so. `
      + `Reason: ${reason}`);
    if (!confirmed) return;
    cancelButton.disabled = true;
    const answer = await api(`${jobUrl}/cancel`, {method: 'POST', body: {reason}});
    cancelButton.disabled = false;
    if (!answer.ok) {
      setText(alert, `Could not cancel it (${refusal(answer)}).`);
      return;
    }
    cancelReason.value = '';
    show(answer.data);
    read();
  });

  outcomesButton.addEventListener('click', async () => {
    if (!outcomes.hidden) {
      outcomes.hidden = true;
      outcomesButton.setAttribute('aria-expanded', 'false');
      return;
    }
    const answer = await api(`${jobUrl}/outcomes`);
    if (!answer.ok) {
      setText(alert, `Could not read the outcomes (${refusal(answer)}).`);
      return;
    }
    const entries = Object.entries(answer.data.outcomes || {});
    // What did not simply work comes first: that is what someone looks for.
    entries.sort(([, a], [, b]) => Number(a.startsWith('acted')) - Number(b.startsWith('acted')));
    const rows = entries.slice(0, OUTCOMES_SHOWN).map(([id, outcome]) => {
      const replay = REPLAYED_AS.exec(outcome);
      const text = replay ? [el('span', {text: 'acted: replayed as '}), taskLink(taskBase, replay[1])]
        : [el('span', {text: outcome})];
      return el('tr', {attrs: {'data-id': id}}, [el('td', {}, [taskLink(taskBase, id)]), el('td', {}, text)]);
    });
    const note = entries.length > OUTCOMES_SHOWN ? ` (the first ${OUTCOMES_SHOWN} shown)` : '';
    outcomes.replaceChildren(
      el('p', {class: 'hint', text: entries.length ? `${plural(entries.length, 'outcome')} so far${note}.`
        : 'No task gone through yet.'}),
      ...(rows.length ? [el('table', {class: 'data bulk-outcome-table'}, [
        el('thead', {}, [el('tr', {}, [el('th', {text: 'Task', attrs: {scope: 'col'}}),
          el('th', {text: 'Outcome', attrs: {scope: 'col'}})])]),
        el('tbody', {}, rows)])] : []));
    outcomes.hidden = false;
    outcomesButton.setAttribute('aria-expanded', 'true');
  });

  // Until the first push, the bar shows where the job stood when it was read.
  renderBar(bar, {id: job.id, name: `pulse.bulk.${job.action}`, status: job.status === 'running' ? 'running' : 'scheduled',
    progress: {percent: job.percent, current: job.done, total: job.total}});
  show(job);
  const view = {node, pushed, join, stop, read};
  following.set(job.id, view);
  if (liveSocket && liveSocket.connected) join(liveSocket);
  read();
  return view;
}

// ---- the panel -------------------------------------------------------------------------------

let panels = 0;

// Builds the bulk action form into `container`:
// getFilters() gives the task-list filters to act on (read at every dry run and run),
// describe(filters) names that selection ("selected by status=failed", "of the failure group …"),
// actions the choices offered, onJob(job) is told of each job started or followed here, and
// onEnd(job) of each one that ended.
export function bulkPanel(container, {getFilters, describe = selectedBy, actions = BULK_ACTIONS,
  onJob = () => {}, onEnd = () => {}}) {
  const {bulkApi: apiBase, taskApi, taskBase} = container.dataset;
  const id = `bulk-${++panels}`;
  const actionSelect = el('select', {attrs: {id: `${id}-action`, name: 'action'}},
    actions.map((action) => el('option', {text: action, attrs: {value: action}})));
  const reasonInput = el('input', {attrs: {id: `${id}-reason`, name: 'reason', maxlength: 500,
    autocomplete: 'off', required: '', 'aria-describedby': `${id}-reason-hint`}});
  const dryButton = el('button', {class: 'secondary bulk-dry-run', text: 'Dry run', attrs: {type: 'button'}});
  const runButton = el('button', {class: 'danger bulk-run', attrs: {type: 'submit'}});
  const form = el('form', {class: 'bulk-form'}, [
    el('div', {class: 'bulk-field'}, [el('label', {text: 'Action', attrs: {for: actionSelect.id}}), actionSelect]),
    el('div', {class: 'bulk-field bulk-reason'}, [
      el('label', {text: 'Reason', attrs: {for: reasonInput.id}}), reasonInput,
      el('span', {class: 'hint', text: 'Required: it goes into the audit log.', attrs: {id: `${id}-reason-hint`}}),
    ]),
    el('div', {class: 'bulk-buttons'}, [dryButton, runButton]),
  ]);
  const preview = el('div', {class: 'bulk-preview', attrs: {role: 'status', 'aria-live': 'polite'}});
  const alert = el('p', {class: 'error bulk-error', attrs: {role: 'alert'}});
  const jobs = el('div', {class: 'bulk-jobs'});
  const views = new Map();  // job id -> the view shown here
  container.replaceChildren(form, alert, preview, jobs);

  let busy = false;
  let generation = 0;  // bumped by reset(), so an answer for an earlier selection is dropped

  const action = () => actionSelect.value;
  function labelRun() {
    setText(runButton, `Run ${action()}…`);
  }

  function fail(text) {
    setText(alert, text);
  }

  function setBusy(value) {
    busy = value;
    dryButton.disabled = value;
    runButton.disabled = value;
  }

  async function previewOf(verb, filters) {
    const params = new URLSearchParams({action: verb, ...filters});
    const mine = generation;
    const answer = await api(`${apiBase}/preview?${params}`);
    if (mine !== generation) return null;
    if (!answer.ok) {
      preview.replaceChildren();
      fail(`The dry run was refused (${refusal(answer)}).`);
      return null;
    }
    fail('');
    return answer.data;
  }

  function countText(result) {
    return result.more ? `More than ${result.cap} tasks (the cap)` : plural(result.matched, 'task');
  }

  function showPreview(result, filters) {
    const verb = result.action;
    const lines = [el('p', {class: 'bulk-preview-count', text: result.matched || result.more
      ? `Dry run: ${countText(result)} ${describe(filters)}; ${result.eligible} can be ${DONE_AS[verb]} now.`
      : `Dry run: no task is ${describe(filters)}.`})];
    if (result.more) {
      lines.push(el('p', {class: 'hint', text: `A bulk action takes at most ${result.cap} tasks: narrow the filters.`}));
    }
    if (result.sample.length) {
      const items = result.sample.map((taskId) => el('li', {}, [taskLink(taskBase, taskId)]));
      lines.push(el('p', {class: 'hint bulk-sample-title',
        text: result.sample.length < result.matched ? `The first ${result.sample.length}:` : 'They are:'}));
      lines.push(el('ul', {class: 'bulk-sample', attrs: {'aria-label': 'Ids of the first tasks selected'}}, items));
    }
    preview.replaceChildren(...lines);
  }

  async function dryRun() {
    if (busy) return;
    setBusy(true);
    const filters = cleanFilters(getFilters());
    const result = await previewOf(action(), filters);
    setBusy(false);
    if (result) showPreview(result, filters);
  }

  async function run(event) {
    event.preventDefault();
    if (busy) return;
    const verb = action();
    const reason = reasonInput.value.trim();
    if (!reason) {
      fail('Say why: the reason goes into the audit log with the bulk action.');
      reasonInput.focus();
      return;
    }
    setBusy(true);
    try {
      // The count in the confirmation is the latest one, whatever the last dry run said.
      const filters = cleanFilters(getFilters());
      const result = await previewOf(verb, filters);
      if (!result) return;
      showPreview(result, filters);
      if (result.more) {
        fail(`More than ${result.cap} tasks match: narrow the filters, nothing was started.`);
        return;
      }
      if (!result.matched) {
        fail('No task matches: nothing to do.');
        return;
      }
      if (!result.eligible) {
        fail(`None of the ${plural(result.matched, 'task')} can be ${DONE_AS[verb]} now: nothing to do.`);
        return;
      }
      const others = result.matched - result.eligible;
      const confirmed = await confirmAction(`${capital(verb)} ${plural(result.matched, 'task')}?`,
        `${capital(verb)} ${plural(result.matched, 'task')} ${describe(filters)}? `
        + (others ? `${result.eligible} of them can be ${DONE_AS[verb]} now; the other ${others} are left as they are. `
          : '')
        + `${EFFECT[verb]} Reason: ${reason}`);
      if (!confirmed) {
        preview.append(el('p', {class: 'bulk-not-sent', text: `${capital(verb)} cancelled: nothing was sent.`}));
        return;
      }
      // The cap is the count confirmed: if more tasks match by now, the server refuses rather than
      // act on tasks nobody was shown.
      const answer = await api(apiBase, {method: 'POST', body: {action: verb, filters, reason, cap: result.matched}});
      if (answer.status === 409 && /more than/.test(answer.data.error || '')) {
        fail(`More tasks match now than the ${result.matched} confirmed: nothing was started. Run it again to `
          + 'see the new count.');
        return;
      }
      if (!answer.ok) {
        fail(`The bulk action was refused (${refusal(answer)}).`);
        return;
      }
      reasonInput.value = '';
      preview.replaceChildren();  // the job below says what happens now
      follow(answer.data);
    } finally {
      setBusy(false);
    }
  }

  // Show a job here, live, newest first; the oldest views beyond KEEP_VIEWS go.
  function follow(job) {
    const existing = views.get(job.id);
    if (existing) {
      jobs.prepend(existing.node);
      existing.node.querySelector('.bulk-job-link').focus();
      return;
    }
    const view = jobView(job, {apiBase, taskApi, taskBase, onEnd: (ended) => {
      recentLists.forEach((list) => list.soon());
      onEnd(ended);
    }});
    views.set(job.id, view);
    jobs.prepend(view.node);
    while (views.size > KEEP_VIEWS) {
      const [oldest] = [...views.keys()];
      views.get(oldest).stop();
      views.get(oldest).node.remove();
      views.delete(oldest);
    }
    recentLists.forEach((list) => list.soon());
    onJob(job);
  }

  function reset() {
    generation += 1;
    preview.replaceChildren();
    fail('');
  }

  function setAction(verb) {
    if (!actions.includes(verb)) return;
    actionSelect.value = verb;
    labelRun();
  }

  actionSelect.addEventListener('change', () => {
    labelRun();
    reset();
  });
  dryButton.addEventListener('click', dryRun);
  form.addEventListener('submit', run);
  labelRun();
  return {dryRun, setAction, reset, follow, focus: () => reasonInput.focus()};
}

// ---- recent jobs -----------------------------------------------------------------------------

// The last `limit` bulk actions (GET /api/bulk), re-read when a bulk record is pushed or a job
// started here changes, and every 10 s. A job still going can be followed (and cancelled) through
// `onFollow(job)`.
export function recentJobs(container, {limit = 10, onFollow = null} = {}) {
  const {bulkApi: apiBase, taskBase} = container.dataset;
  const body = el('tbody');
  const table = el('table', {class: 'data bulk-recent'}, [
    el('caption', {class: 'visually-hidden', text: 'Recent bulk actions'}),
    el('thead', {}, [el('tr', {}, ['Started', 'Action', 'Status', 'Tasks', 'Outcome', 'By', 'Reason', '']
      .map((title) => el('th', {text: title, attrs: {scope: 'col'}})))]),
    body]);
  const note = el('p', {class: 'hint bulk-recent-note'});
  container.replaceChildren(note, table);

  function row(job) {
    const badge = el('span', {class: 'badge', text: job.status,
      attrs: {'data-status': JOB_BADGE[job.status] || 'scheduled'}});
    const actions = el('td', {class: 'bulk-recent-actions'});
    if (onFollow && !JOB_ENDS.has(job.status)) {
      const button = el('button', {class: 'secondary', text: 'Follow',
        attrs: {type: 'button', 'aria-label': `Follow bulk ${job.action} ${job.id}`}});
      button.addEventListener('click', () => onFollow(job));
      actions.append(button);
    }
    return el('tr', {attrs: {'data-job-id': job.id}}, [
      el('td', {text: formatAgo(job.created_at), attrs: {title: formatTime(job.created_at)}}),
      el('td', {}, [el('a', {text: job.action, attrs: {href: job.url || taskBase + encodeURIComponent(job.id),
        'aria-label': `Bulk ${job.action} ${job.id}`}})]),
      el('td', {}, [badge]),
      el('td', {class: 'number', text: `${job.done}/${job.total}`}),
      el('td', {text: `${job.acted} acted, ${job.not_eligible} not eligible, ${job.errors} errors, `
        + `${job.uncertain} uncertain`}),
      el('td', {class: 'bulk-recent-who', text: job.who}),
      el('td', {class: 'bulk-recent-reason', text: job.reason}),
      actions,
    ]);
  }

  let signature = '';
  async function read() {
    const answer = await api(apiBase);
    if (!answer.ok) {
      setText(note, `Could not read the bulk actions (${refusal(answer)}).`);
      return;
    }
    const list = (answer.data.jobs || []).slice(0, limit);
    setText(note, list.length ? '' : 'No bulk action yet.');
    table.hidden = !list.length;
    // Rebuilt only when something changed, so a focused Follow button stays put between reads.
    const next = JSON.stringify(list.map((job) => [job.id, job.status, job.done, job.acted, job.not_eligible,
      job.errors, job.uncertain, Math.floor((Date.now() / 1000 - job.created_at) / 60)]));
    if (next === signature) return;
    signature = next;
    body.replaceChildren(...list.map(row));
  }

  const list = refresher(read, {every: 10000, soonEvery: 1000});
  recentLists.add(list);
  list.load();
  return list;
}
