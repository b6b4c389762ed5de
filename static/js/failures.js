// The failure inbox: unresolved failures (failed or lost tasks nobody has replayed or skipped yet)
// grouped by task name and exception type, the largest groups first, with when each was first and
// last seen and its newest failures. Re-read every few seconds while the page is visible, and soon
// after a dashboard push says a task failed, was lost, replayed, skipped or forgotten.
// Operators replay or skip a whole group through a bulk action (bulk.js), filtered by the group's
// id: a dry run, a reason, a confirmation that names the group and the count, then the job's live
// bar. A viewer gets the groups read-only. Task data reaches the DOM as text only, never as HTML.

import {api, canAct, connectLive, el, formatAgo, formatTime, refresher, setText, subscribe} from './common.js';
import {bulkPanel, followJobs, recentJobs, syncJobs} from './bulk.js';

const root = document.getElementById('failures-page');
const API = root.dataset.api;
const TASKS_URL = root.dataset.tasksUrl;
const TASK_BASE = root.dataset.taskBase;
const POLL_EVERY_MS = 5000;
const SOON_MS = 1000;
// The statuses a task enters or leaves a group with.
const MOVES = new Set(['failed', 'lost', 'replayed', 'skipped', 'expired']);

const body = document.querySelector('#failure-groups tbody');
const summary = document.getElementById('failures-summary');
const updated = document.getElementById('failures-updated');
const errorLine = document.getElementById('failures-error');
const empty = document.getElementById('failures-empty');
const rows = new Map();  // group id -> {tr, cells, signature}

const plural = (count, word) => `${count} ${word}${count === 1 ? '' : 's'}`;
const labelOf = (group) => `${group.name} · ${group.exc_type || 'lost'}`;

// ---- the groups ----------------------------------------------------------------------------

function seenCell(className) {
  return el('td', {class: `group-seen ${className}`}, [el('time'), el('span', {class: 'hint'})]);
}

function showSeen(cell, epoch) {
  const time = cell.firstElementChild;
  setText(time, epoch == null ? '—' : formatAgo(epoch));
  if (epoch == null) time.removeAttribute('datetime');
  else time.setAttribute('datetime', new Date(epoch * 1000).toISOString());
  setText(cell.lastElementChild, formatTime(epoch));
}

function sampleItem(task) {
  const link = el('a', {attrs: {href: TASK_BASE + encodeURIComponent(task.id), title: task.id,
    'aria-label': `Task ${task.id}`}}, [el('code', {text: task.id.slice(0, 8)})]);
  const parts = [link];
  if (task.status && task.status !== 'failed') {
    parts.push(' ', el('span', {class: 'badge', text: task.status, attrs: {'data-status': task.status}}));
  }
  parts.push(el('span', {class: 'sample-message', text: task.message || '(no message)',
    attrs: {title: task.at == null ? null : formatTime(task.at)}}));
  return el('li', {attrs: {'data-id': task.id}}, parts);
}

function rowFor(group) {
  let entry = rows.get(group.id);
  if (entry) return entry;
  const label = labelOf(group);
  const actions = el('td', {class: 'group-actions'}, [
    el('a', {class: 'group-tasks', text: 'See these tasks', attrs: {
      href: `${TASKS_URL}?${new URLSearchParams({failure_group: group.id})}`,
      'aria-label': `See these tasks: group ${label}`}}),
  ]);
  if (canAct && panel) {
    for (const [action, text] of [['replay', 'Replay group…'], ['skip', 'Skip group…']]) {
      const button = el('button', {class: action === 'skip' ? 'secondary' : '', text,
        attrs: {type: 'button', 'data-action': action, 'aria-label': `${text.slice(0, -1)} ${label}`}});
      button.addEventListener('click', () => openAction(group.id, action));
      actions.append(button);
    }
  }
  const tr = el('tr', {attrs: {'data-group': group.id, 'data-lost': group.exc_type ? null : 'true'}}, [
    el('th', {class: 'group-name', text: group.name, attrs: {scope: 'row'}}),
    el('td', {class: 'group-exc', text: group.exc_type || 'lost'}),
    el('td', {class: 'number group-count'}),
    seenCell('group-first'),
    seenCell('group-last'),
    el('td', {class: 'group-samples'}, [el('ul', {class: 'samples'})]),
    actions,
  ]);
  entry = {tr, group, signature: ''};
  rows.set(group.id, entry);
  return entry;
}

function renderRow(entry, group) {
  entry.group = group;
  const {tr} = entry;
  tr.dataset.count = String(group.count);
  setText(tr.querySelector('.group-count'), group.count);
  showSeen(tr.querySelector('.group-first'), group.first_seen);
  showSeen(tr.querySelector('.group-last'), group.last_seen);
  // The samples are rebuilt only when they changed: a focused link stays put between reads.
  const signature = JSON.stringify(group.sample);
  if (signature !== entry.signature) {
    entry.signature = signature;
    tr.querySelector('.samples').replaceChildren(...group.sample.map(sampleItem));
  }
}

function renderGroups(data) {
  const list = data.groups || [];
  const ids = new Set(list.map((group) => group.id));
  for (const [id, entry] of [...rows]) {
    if (!ids.has(id)) {
      // Keyboard focus on a row that goes must not be left on nothing.
      if (entry.tr.contains(document.activeElement)) document.getElementById('groups-title').focus();
      entry.tr.remove();
      rows.delete(id);
    }
  }
  // Re-inserting a row already in place keeps it (and the focus within it) where it is.
  list.forEach((group, index) => {
    const entry = rowFor(group);
    renderRow(entry, group);
    if (body.children[index] !== entry.tr) body.insertBefore(entry.tr, body.children[index] || null);
  });
  empty.hidden = list.length > 0;
  const shown = list.length < data.total_groups ? ` (the largest ${list.length} shown)` : '';
  setText(summary, data.total_failures
    ? `${plural(data.total_failures, 'unresolved failure')} in ${plural(data.total_groups, 'group')}${shown}.`
    : 'No unresolved failure.');
  if (acting) showActingGroup();
}

async function readGroups() {
  const answer = await api(API);
  if (answer.ok) {
    errorLine.hidden = true;
    renderGroups(answer.data);
    updated.classList.remove('stale');
    setText(updated, `Updated ${new Date().toLocaleTimeString()}`);
  } else {
    updated.classList.add('stale');
    errorLine.hidden = false;
    setText(errorLine, `Could not read the failures (${answer.data.error || `HTTP ${answer.status}`}); `
      + 'what is shown may be out of date.');
  }
}

const {load: loadGroups, soon: refreshSoon} = refresher(readGroups, {every: POLL_EVERY_MS, soonEvery: SOON_MS});

// ---- acting on a group (operators) --------------------------------------------------------------

const actionSection = document.getElementById('group-action');
const actionBox = document.getElementById('group-bulk');
let acting = null;  // {id, label}: the group the bulk form is for

const panel = canAct && actionBox ? bulkPanel(actionBox, {
  actions: ['replay', 'skip'],
  getFilters: () => ({failure_group: acting ? acting.id : ''}),
  describe: () => `of the failure group ${acting ? acting.label : ''}`,
  // The job's pushes move tasks out of the group; its end is worth a read at once.
  onEnd: () => loadGroups(),
}) : null;

const actionTitle = document.getElementById('group-action-title');

function showActingGroup() {
  const entry = rows.get(acting.id);
  if (entry) acting.label = labelOf(entry.group);
  setText(actionTitle, `Act on the group ${acting.label}${entry ? '' : ' (no failure left)'}`);
}

function openAction(id, action) {
  const entry = rows.get(id);
  if (!entry) return;
  const changed = !acting || acting.id !== id;
  acting = {id, label: labelOf(entry.group)};
  showActingGroup();
  actionSection.hidden = false;
  if (changed) panel.reset();
  panel.setAction(action);
  panel.dryRun();  // the counts first: how many, and how many the action applies to
  panel.focus();
}

if (panel) {
  recentJobs(document.getElementById('bulk-recent'), {onFollow: (job) => {
    actionSection.hidden = false;
    if (!acting) setText(actionTitle, 'Bulk actions');
    panel.follow(job);
  }});
  document.getElementById('group-action-close').addEventListener('click', () => {
    actionSection.hidden = true;
    const entry = acting && rows.get(acting.id);
    (entry ? entry.tr.querySelector('button') : document.getElementById('groups-title')).focus();
  });
}

// ---- live ----------------------------------------------------------------------------------

const socket = connectLive((live) => {
  // Every (re)connection: rejoin the dashboard room (for its task pushes), then re-read.
  subscribe(live, {dashboard: true}, () => loadGroups());
  if (panel) syncJobs(live);
});
if (panel) followJobs(socket);
socket.on('tasks', (tasks) => {
  if (Array.isArray(tasks) && tasks.some((task) => task && MOVES.has(task.status))) refreshSoon();
});

loadGroups();  // at once, even before the live connection is up
