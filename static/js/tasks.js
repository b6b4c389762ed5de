// The Tasks page: a filtered, paged and live table of tasks.
// The filters live in the URL (bookmarkable, back button), pages come from GET /api/tasks, and
// the dashboard room's `tasks` pushes update the rows in view, one animation frame at a time.
// Only the rows the operator asked for are in the DOM; task data goes in as text only.
// Operators get the bulk action panel (bulk.js), which acts on the filters in the URL.
import {
  STATUSES, api, canAct, connectLive, el, formatDuration, formatTime, frameBatcher, progressBar, progressText,
  renderBar, setText, subscribe,
} from './common.js';
import {bulkPanel, followJobs, recentJobs, selectedBy, syncJobs} from './bulk.js';

const PAGE_SIZE = 50;
// failure_group (a group of the failure inbox) is a hidden field: the inbox links here with it.
const TEXT_FILTERS = ['status', 'name', 'worker', 'queue', 'failure_group', 'q'];
const MAX_KNOWN_NAMES = 200;
const TYPING_DELAY_MS = 300;

const root = document.getElementById('tasks-page');
const apiUrl = root.dataset.api;
const taskBase = root.dataset.taskBase;
const form = document.getElementById('filters');
const statusSelect = document.getElementById('filter-status');
const tbody = document.getElementById('task-rows');
const listStatus = document.getElementById('list-status');
const empty = document.getElementById('tasks-empty');
const loadMoreButton = document.getElementById('load-more');
const knownNames = document.getElementById('known-names');
const exportLinks = [document.getElementById('export-csv'), document.getElementById('export-ndjson')];

const rows = new Map();        // task id -> {tr, cells..., task}: exactly the rows in the table
const recorders = new Set();   // pushes seen while a page is on its way, replayed on its answer
const names = new Set();
let filters = readUrl();
let more = null;               // how to continue: {cursor} and/or {until|since}; null when all is shown
let capacity = PAGE_SIZE;      // rows the operator asked to see (grows with "Load more")
let generation = 0;            // bumped per first-page load, so a stale answer is dropped

// ---- filters and the URL -------------------------------------------------------------------

function readUrl() {
  const params = new URLSearchParams(window.location.search);
  const read = {};
  for (const key of TEXT_FILTERS) read[key] = (params.get(key) || '').trim();
  read.order = params.get('order') === 'asc' ? 'asc' : 'desc';
  return read;
}

function queryOf(values) {
  const params = new URLSearchParams();
  for (const key of TEXT_FILTERS) if (values[key]) params.set(key, values[key]);
  if (values.order === 'asc') params.set('order', 'asc');
  return params.toString();
}

function formValues() {
  const values = {};
  for (const key of TEXT_FILTERS) values[key] = form.elements[key].value.trim();
  values.order = form.elements.order.value === 'asc' ? 'asc' : 'desc';
  return values;
}

function showFilters(values) {
  // A shared URL may hold a status list ("failed,lost") the select has no option for yet.
  if (values.status && ![...statusSelect.options].some((option) => option.value === values.status)) {
    statusSelect.append(el('option', {text: values.status, attrs: {value: values.status}}));
  }
  for (const key of TEXT_FILTERS) form.elements[key].value = values[key];
  form.elements.order.value = values.order;
  showGroup(values.failure_group);
}

// The group's id is opaque: its name and exception type come from the inbox, for the line that says
// the list is narrowed to it (and for the bulk action's confirmation).
const groupLine = document.getElementById('group-filter');
let groupLabel = null;  // {id, text}

async function showGroup(id) {
  groupLine.hidden = !id;
  if (!id || (groupLabel && groupLabel.id === id)) return;
  groupLabel = {id, text: 'a failure group'};
  setText(document.getElementById('group-filter-label'), groupLabel.text);
  const answer = await api(root.dataset.failuresApi);
  const group = answer.ok ? (answer.data.groups || []).find((each) => each.id === id) : null;
  if (!group || groupLabel.id !== id) return;
  groupLabel.text = `${group.name} · ${group.exc_type || 'lost'}`;
  setText(document.getElementById('group-filter-label'), groupLabel.text);
}

document.getElementById('group-filter-clear').addEventListener('click', () => {
  form.elements.failure_group.value = '';
  showGroup('');
  edited(null, true);
  burstField = null;
});

function applyForm(push) {
  const next = formValues();
  const query = queryOf(next);
  if (query === queryOf(filters)) return;
  filters = next;
  if (bulk) bulk.reset();  // its dry run was for the filters before
  const url = query ? `${window.location.pathname}?${query}` : window.location.pathname;
  if (push) window.history.pushState(null, '', url);
  else window.history.replaceState(null, '', url);
  loadFirstPage();
}

// Typing a word makes one history entry, not one per key: the first change of a burst pushes,
// the rest of the burst replaces it.
let typingTimer = 0;
let burstField = null;

function edited(field, immediate) {
  clearTimeout(typingTimer);
  const run = () => {
    applyForm(field === null || burstField !== field);
    burstField = field;
  };
  if (immediate) run();
  else typingTimer = setTimeout(run, TYPING_DELAY_MS);
}

form.addEventListener('input', (event) => {
  if (event.target.tagName === 'INPUT') edited(event.target.name, false);
});
form.addEventListener('change', (event) => {
  edited(event.target.name, true);
  burstField = null;
});
form.addEventListener('submit', (event) => {
  event.preventDefault();
  edited(null, true);
  burstField = null;
});
document.getElementById('filter-clear').addEventListener('click', () => {
  showFilters({...Object.fromEntries(TEXT_FILTERS.map((key) => [key, ''])), order: 'desc'});
  edited(null, true);
  burstField = null;
});
window.addEventListener('popstate', () => {
  clearTimeout(typingTimer);
  burstField = null;
  filters = readUrl();
  showFilters(filters);
  if (bulk) bulk.reset();
  loadFirstPage();
});

// ---- matching and ordering, as the server does ----------------------------------------------

// The search as the server reads it (pulse/record/terms.py): space-separated parts, all of which
// must match, a quoted part kept whole. The page can check id:, name: and a free part found in the
// id or the name; the rest looks inside tasks (kwargs:, exc:, ...), which only the server can.
const INSIDE = ['args', 'kwargs', 'result', 'exc', 'msg', 'detail'];

function searchParts(q) {
  const parts = [];
  for (const match of q.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) {
    parts.push(match[1] ?? match[2] ?? match[3].replace(/["']/g, ''));
  }
  return parts;
}

// true, false, or null when only the server can tell.
function searchMatches(task, q) {
  let sure = true;
  const name = (task.name || '').toLowerCase();
  for (const part of searchParts(q)) {
    const colon = part.indexOf(':');
    const field = colon > 0 ? part.slice(0, colon).toLowerCase() : '';
    const value = colon > 0 ? part.slice(colon + 1) : '';
    if (value && field === 'id') {
      if (!task.id.includes(value)) return false;
    } else if (value && field === 'name') {
      if (!name.includes(value.toLowerCase())) return false;
    } else if (value && INSIDE.includes(field)) {
      sure = false;
    } else if (!task.id.includes(part) && !name.includes(part.toLowerCase())) {
      sure = false;  // it may be a value inside the task
    }
  }
  return sure ? true : null;
}

// true, false, or null (only the server can tell: see searchMatches).
function matches(task) {
  if (filters.status && !filters.status.split(',').includes(task.status)) return false;
  if (filters.name && task.name !== filters.name) return false;  // the API's name filter is exact
  if (filters.worker && task.worker !== filters.worker) return false;
  // A failure group holds unresolved failures only; otherwise the queue and the group are not in a
  // pushed summary, so only the server can tell.
  if (filters.failure_group && task.status !== 'failed' && task.status !== 'lost') return false;
  const search = filters.q ? searchMatches(task, filters.q) : true;
  return search !== false && (filters.queue || filters.failure_group) ? null : search;
}

// Whether task `a` comes before task `b` in the current order: by first-recorded time, then id.
function before(a, b) {
  const desc = filters.order === 'desc';
  const ta = a.created_at ?? Infinity;
  const tb = b.created_at ?? Infinity;
  if (ta !== tb) return desc ? ta > tb : ta < tb;
  return desc ? a.id > b.id : a.id < b.id;
}

// A task belongs in view when everything matching is loaded, or it sorts before the last row
// (a task after the last row will come with "Load more").
function belongs(task) {
  if (!more) return true;
  const last = tbody.lastElementChild;
  if (!last) return filters.order === 'desc';
  return before(task, rows.get(last.dataset.id).task);
}

// ---- rows ----------------------------------------------------------------------------------

function runtimeOf(task) {
  if (task.runtime != null) return formatDuration(task.runtime);
  if (task.started_at != null && task.finished_at != null) return formatDuration(task.finished_at - task.started_at);
  if (task.started_at != null && (task.status === 'running' || task.status === 'retrying')) {
    return formatDuration(Math.max(0, Date.now() / 1000 - task.started_at));
  }
  return '';
}

function describeProgress(task) {
  const message = task.progress && task.progress.message ? task.progress.message : '';
  const failure = task.failure && task.status !== 'finished'
    ? [task.failure.exc_type, task.failure.exc_message].filter(Boolean).join(': ') : '';
  return [progressText(task), message, failure].filter(Boolean).join(' — ');
}

function createRow(task) {
  const badge = el('span', {class: 'badge'});
  const link = el('a', {class: 'task-link', attrs: {href: taskBase + encodeURIComponent(task.id)}});
  const shortId = el('code', {class: 'task-id', text: task.id.slice(0, 8), attrs: {title: task.id}});
  const worker = el('td', {class: 'col-worker'});
  const started = el('td', {class: 'col-started'});
  const runtime = el('td', {class: 'col-runtime'});
  const bar = progressBar(`Progress of ${task.name || task.id}`);
  const text = el('div', {class: 'progress-text'});
  const tr = el('tr', {attrs: {'data-id': task.id}}, [
    el('td', {class: 'col-status'}, [badge]),
    el('td', {class: 'col-name'}, [link]),
    el('td', {class: 'col-id'}, [shortId]),
    worker, started, runtime,
    el('td', {class: 'col-progress'}, [bar, text]),
  ]);
  const row = {tr, badge, link, worker, started, runtime, bar, text, task: null};
  rows.set(task.id, row);
  update(row, task);
  return row;
}

function update(row, task) {
  // Pushes and page answers race: never let an older copy of a task replace a newer one.
  if (row.task && task.updated_at != null && row.task.updated_at != null
      && task.updated_at < row.task.updated_at) return;
  row.task = task;
  const name = task.name || '(unnamed task)';
  row.tr.dataset.status = task.status;
  // A task that matched when the server listed it stays in filter unless it surely no longer does.
  row.tr.classList.toggle('off-filter', matches(task) === false);
  row.badge.dataset.status = task.status;
  setText(row.badge, task.status);
  setText(row.link, name);
  row.link.setAttribute('aria-label', `${name}, task ${task.id}`);
  setText(row.worker, task.worker);
  setText(row.started, formatTime(task.started_at));
  setText(row.runtime, runtimeOf(task));
  renderBar(row.bar, task);
  setText(row.text, describeProgress(task));
  noteName(task.name);
}

function noteName(name) {
  if (!name || names.has(name) || names.size >= MAX_KNOWN_NAMES) return;
  names.add(name);
  knownNames.append(el('option', {attrs: {value: name}}));
}

function removeRow(id) {
  const row = rows.get(id);
  if (!row) return null;
  row.tr.remove();
  rows.delete(id);
  return row;
}

// Show exactly `tasks`, in order, reusing the rows already there (keeps focus and avoids flicker).
function showPage(tasks) {
  const wanted = new Set(tasks.map((task) => task.id));
  for (const id of [...rows.keys()]) if (!wanted.has(id)) removeRow(id);
  let next = tbody.firstElementChild;
  for (const task of tasks) {
    const existing = rows.get(task.id);
    const row = existing || createRow(task);
    if (existing) update(row, task);
    if (row.tr === next) next = next.nextElementSibling;
    else tbody.insertBefore(row.tr, next);
  }
}

function appendPage(tasks) {
  let first = null;
  for (const task of tasks) {
    const existing = rows.get(task.id);
    if (existing) {
      update(existing, task);
      continue;
    }
    const row = createRow(task);
    tbody.append(row.tr);
    first = first || row;
  }
  return first;
}

// A pushed task: update its row, or insert it where it sorts if it matches and belongs in view.
function place(task) {
  const row = rows.get(task.id);
  if (row) {
    update(row, task);
    return;
  }
  const match = matches(task);
  if (match === false || !belongs(task)) return;
  if (match === null && !confirmed.has(task.id)) {
    askServer(task);
    return;
  }
  const created = createRow(task);
  let after = tbody.firstElementChild;
  while (after && !before(task, rows.get(after.dataset.id).task)) after = after.nextElementSibling;
  tbody.insertBefore(created.tr, after);
}

// New tasks that only the server can match (a search inside tasks) are asked about together, at
// most every CONFIRM_DELAY_MS: one page of the filters from the oldest of them on. Those it lists
// match, and are placed.
const CONFIRM_DELAY_MS = 1000;
const confirmed = new Set();
let pending = null;   // the oldest created_at among the tasks to ask about, or null

function askServer(task) {
  if (task.created_at == null) return;
  const first = pending === null;
  pending = first ? task.created_at : Math.min(pending, task.created_at);
  if (first) setTimeout(confirmPending, CONFIRM_DELAY_MS);
}

async function confirmPending() {
  const since = pending;
  const mine = generation;
  pending = null;
  const answer = await api(pageUrl({since}));
  if (!answer.ok || mine !== generation) return;
  for (const task of answer.data.tasks) {
    confirmed.add(task.id);
    draw(task.id, task);
  }
  if (confirmed.size > 10000) confirmed.clear();  // bounded; rows already shown stay
}

// Live inserts must not grow the table without bound: drop rows past the capacity from the end,
// and let "Load more" continue from the first dropped one (until/since are inclusive).
function trim() {
  let dropped = null;
  while (rows.size > capacity) dropped = removeRow(tbody.lastElementChild.dataset.id);
  if (dropped && dropped.task.created_at != null) {
    more = {[filters.order === 'desc' ? 'until' : 'since']: dropped.task.created_at};
  }
}

function refreshChrome() {
  empty.hidden = rows.size > 0;
  loadMoreButton.hidden = !more;
}

// ---- loading -------------------------------------------------------------------------------

function pageUrl(extra) {
  const params = new URLSearchParams(queryOf(filters));
  params.set('limit', String(PAGE_SIZE));
  for (const [key, value] of Object.entries(extra)) if (value != null) params.set(key, String(value));
  return `${apiUrl}?${params}`;
}

function startRecording() {
  const recorded = new Map();
  recorders.add(recorded);
  return recorded;
}

function finishRecording(recorded) {
  recorders.delete(recorded);
  for (const task of recorded.values()) place(task);
}

function failed(answer) {
  listStatus.classList.add('error');
  setText(listStatus, `Could not load tasks (${answer.status || 'no answer'}): ${answer.data.error || 'unknown error'}`);
}

function announce(text) {
  listStatus.classList.remove('error');
  setText(listStatus, text);
}

// The export links carry the filters in view (the server streams every task they select).
function showExports() {
  const query = queryOf(filters);
  for (const link of exportLinks) {
    const base = link.getAttribute('href').split('?')[0];
    link.setAttribute('href', query ? `${base}?${query}` : base);
  }
}

async function loadFirstPage() {
  showExports();
  confirmed.clear();
  const mine = ++generation;
  const recorded = startRecording();
  root.setAttribute('aria-busy', 'true');
  const answer = await api(pageUrl({}));
  if (mine !== generation) {
    recorders.delete(recorded);
    return;
  }
  root.removeAttribute('aria-busy');
  if (!answer.ok) {
    recorders.delete(recorded);
    showPage([]);
    more = null;
    refreshChrome();
    failed(answer);
    return;
  }
  capacity = PAGE_SIZE;
  more = answer.data.next_cursor ? {cursor: answer.data.next_cursor} : null;
  showPage(answer.data.tasks);
  finishRecording(recorded);
  trim();
  refreshChrome();
  const count = answer.data.tasks.length;
  if (!count && more) {
    // A sparse search answers an empty page with a cursor: nothing among the newest yet.
    announce('Searching older tasks…');
    await loadMore();
    return;
  }
  announce(count ? `${count} task${count === 1 ? '' : 's'} shown${more ? '; more can be loaded' : ''}.`
    : 'No task matches these filters.');
}

async function loadMore() {
  if (!more) return;
  const mine = generation;
  const recorded = startRecording();
  loadMoreButton.disabled = true;
  const answer = await api(pageUrl(more));
  loadMoreButton.disabled = false;
  if (mine !== generation) {
    recorders.delete(recorded);
    return;
  }
  if (!answer.ok) {
    recorders.delete(recorded);
    failed(answer);
    return;
  }
  const {until, since} = more;
  more = answer.data.next_cursor ? {cursor: answer.data.next_cursor, until, since} : null;
  const first = appendPage(answer.data.tasks);
  capacity = Math.max(capacity + PAGE_SIZE, rows.size);
  finishRecording(recorded);
  trim();
  refreshChrome();
  if (!rows.size && more) {
    await loadMore();  // still nothing found: keep going until a match or the end
    return;
  }
  announce(rows.size ? `${rows.size} tasks shown${more ? '; more can be loaded' : '; that is all of them'}.`
    : 'No task matches these filters.');
  // The button may have gone; keep keyboard users where the new rows start.
  if (loadMoreButton.hidden && first) first.link.focus();
}

loadMoreButton.addEventListener('click', loadMore);

// ---- live ----------------------------------------------------------------------------------

const draw = frameBatcher((tasks) => {
  for (const task of tasks) place(task);
  trim();
  refreshChrome();
});

function onSync(socket) {
  // After every (re)connection: join the dashboard room, then re-read the page, so nothing
  // that changed while we were away stays stale. The ack's snapshot is not needed here.
  subscribe(socket, {dashboard: true}, () => loadFirstPage());
  if (bulk) syncJobs(socket);
}

// Running tasks' runtime ticks between pushes.
setInterval(() => {
  const ticking = [];
  for (const row of rows.values()) {
    if (row.task.status === 'running' || row.task.status === 'retrying') ticking.push(row);
  }
  if (ticking.length) {
    requestAnimationFrame(() => ticking.forEach((row) => setText(row.runtime, runtimeOf(row.task))));
  }
}, 1000);

// ---- bulk actions (operators) ---------------------------------------------------------------

function bulkFilters() {
  const selected = {};
  for (const key of TEXT_FILTERS) if (filters[key]) selected[key] = filters[key];
  return selected;
}

// As the confirmation says it: "selected by status=failed failure group tasks.x · ValueError".
function describeSelection(selected) {
  const {failure_group: group, ...rest} = selected;
  const words = selectedBy(rest);
  if (!group) return words;
  const label = `failure group ${groupLabel && groupLabel.id === group ? groupLabel.text : group}`;
  return Object.keys(rest).length ? `${words} ${label}` : `selected by ${label}`;
}

const bulkBox = document.getElementById('bulk-panel');
const bulk = canAct && bulkBox ? bulkPanel(bulkBox, {getFilters: bulkFilters, describe: describeSelection}) : null;
if (bulk) recentJobs(document.getElementById('bulk-recent'), {onFollow: (job) => bulk.follow(job)});

for (const status of STATUSES) statusSelect.append(el('option', {text: status, attrs: {value: status}}));
showFilters(filters);
loadFirstPage();
const socket = connectLive(onSync);
if (bulk) followJobs(socket);
socket.on('tasks', (tasks) => {
  if (!Array.isArray(tasks)) return;
  for (const task of tasks) {
    if (!task || typeof task.id !== 'string') continue;
    for (const recorded of recorders) recorded.set(task.id, task);
    draw(task.id, task);
  }
});
