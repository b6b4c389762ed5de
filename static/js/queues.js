// The queues page: each queue's waiting messages, the age of the oldest and its consumers; a peek
// at the next messages (Redis; left in place); purge with a reason, behind a confirmation that
// names the queue and the count (operator only: a viewer gets no purge button).
// Queue depth has no push of its own: the list is re-read every few seconds while the page is
// visible, and soon after a `counts` push says tasks were sent or started.
// Queue names and message data reach the DOM through textContent and attributes only, never as HTML.

import {
  api, canAct, confirmAction, connectLive, consumersText, el, formatDuration, formatTime, refresher,
  setText, subscribe,
} from './common.js';

const root = document.getElementById('queues-page');
const QUEUES_URL = root.dataset.queuesUrl;
const API_BASE = root.dataset.apiBase;
const TASKS_URL = root.dataset.tasksUrl;
const POLL_EVERY_MS = 3000;
const SOON_MS = 1000;
const NAME_LIMIT = Number(root.dataset.nameLimit);
const VALID_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$/;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

const body = document.querySelector('#queues tbody');
const empty = document.getElementById('queues-empty');
const updated = document.getElementById('queues-updated');
const errorLine = document.getElementById('queues-error');
const brokerLine = document.getElementById('queues-broker');
const rows = new Map();     // queue name -> {tr, data}
let peeking = null;         // the queue whose messages are shown

function queueUrl(name, suffix) {
  return `${API_BASE}${encodeURIComponent(name)}/${suffix}`;
}

// The API addresses a queue by a name of at most NAME_LIMIT characters without control characters;
// a longer one (Redis allows it) is listed, and can be neither peeked at nor purged from here.
function addressable(name) {
  return [...name].length <= NAME_LIMIT && !CONTROL.test(name);
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

// ---- The queue table ---------------------------------------------------------------------

function rowFor(name) {
  let entry = rows.get(name);
  if (!entry) {
    const peekButton = el('button', {class: 'secondary peek-button', text: 'Peek',
      attrs: {type: 'button', 'aria-label': `Peek at queue ${name}`}});
    peekButton.addEventListener('click', () => showPeek(name));
    const actions = el('td', {class: 'actions'}, [peekButton,
      el('span', {class: 'no-peek hint', attrs: {hidden: ''}})]);
    if (!addressable(name)) {
      actions.replaceChildren(el('span', {class: 'hint unaddressable',
        text: `no peek or purge: the name is over ${NAME_LIMIT} characters or holds a control character`}));
    } else if (canAct) {
      const purgeButton = el('button', {class: 'danger purge-button', text: 'Purge…',
        attrs: {type: 'button', 'aria-label': `Purge queue ${name}`}});
      purgeButton.addEventListener('click', () => showPurge(name));
      actions.append(' ', purgeButton);
    }
    const tr = el('tr', {attrs: {'data-queue': name}}, [
      el('th', {class: 'queue-name', text: name, attrs: {scope: 'row'}}),
      el('td', {class: 'number depth'}),
      el('td', {class: 'oldest'}),
      el('td', {class: 'consumers'}),
      actions,
    ]);
    entry = {tr, data: null};
    rows.set(name, entry);
  }
  return entry;
}

function renderRow(entry, queue) {
  entry.data = queue;
  const {tr} = entry;
  tr.dataset.depth = queue.depth == null ? '' : String(queue.depth);
  setText(tr.querySelector('.depth'), queue.depth == null ? '—' : queue.depth);
  setText(tr.querySelector('.oldest'), queue.oldest_age == null ? '—' : formatDuration(queue.oldest_age));
  setText(tr.querySelector('.consumers'), consumersText(queue.consumers));
  tr.classList.toggle('waiting', queue.depth > 0);
  tr.classList.toggle('unconsumed', Array.isArray(queue.consumers) && queue.consumers.length === 0);
  const peekButton = tr.querySelector('.peek-button');
  const noPeek = tr.querySelector('.no-peek');
  if (!peekButton) return;  // a name the API cannot address
  peekButton.hidden = !queue.peek;
  noPeek.hidden = queue.peek;
  setText(noPeek, queue.peek ? '' : `no peek on ${queue.broker}`);
  noPeek.title = queue.peek ? '' : 'Reading a message there takes it out of the queue, so Pulse does not.';
}

function renderQueues(data) {
  const list = data.queues || [];
  const names = new Set(list.map((queue) => queue.name));
  for (const [name, entry] of [...rows]) {
    if (!names.has(name)) {
      entry.tr.remove();
      rows.delete(name);
    }
  }
  // Re-appending a row that is already in place keeps it (and the focus within it) where it is.
  list.forEach((queue, index) => {
    const entry = rowFor(queue.name);
    renderRow(entry, queue);
    if (body.children[index] !== entry.tr) body.insertBefore(entry.tr, body.children[index] || null);
  });
  empty.hidden = list.length > 0;
  setText(brokerLine, data.broker === 'redis'
    ? 'Broker: Redis. A peek reads the next messages without taking them.'
    : `Broker: ${data.broker}. Depths come from the broker; there is no peek, since reading a message there takes it out of the queue.`);
}

// ---- Loading -----------------------------------------------------------------------------

async function readQueues() {
  const answer = await api(QUEUES_URL);
  if (answer.ok) {
    errorLine.hidden = true;
    renderQueues(answer.data);
    updated.classList.remove('stale');
    setText(updated, `Updated ${new Date((answer.data.at || Date.now() / 1000) * 1000).toLocaleTimeString()}`);
  } else {
    updated.classList.add('stale');
    errorLine.hidden = false;
    setText(errorLine, `Could not read the queues (${answer.data.error || `HTTP ${answer.status}`}); `
      + 'what is shown may be out of date.');
  }
  if (peeking !== null) await loadPeek();
}

const {load: loadQueues, soon: refreshSoon} = refresher(readQueues, {every: POLL_EVERY_MS, soonEvery: SOON_MS});

// ---- Peek --------------------------------------------------------------------------------

const peekSection = document.getElementById('peek');
const peekBody = document.querySelector('#peek-messages tbody');
const peekSummary = document.getElementById('peek-summary');
const peekLimit = document.getElementById('peek-limit');

function etaText(eta) {
  if (eta == null) return '';
  const seconds = eta - Date.now() / 1000;
  return seconds > 0 ? `${formatTime(eta)} (in ${formatDuration(seconds)})` : formatTime(eta);
}

function taskCell(message) {
  if (message.undecodable) {
    return el('td', {class: 'task-cell'}, [
      el('strong', {text: 'Undecodable message'}),
      el('div', {class: 'hint', text: `${message.note || ''} (${message.size} bytes)`}),
    ]);
  }
  const name = message.name || '(no task name)';
  const label = message.id && VALID_ID.test(message.id)
    ? el('a', {class: 'task-name', text: name, attrs: {href: `${TASKS_URL}/${encodeURIComponent(message.id)}`}})
    : el('span', {class: 'task-name', text: name});
  return el('td', {class: 'task-cell'}, [label, el('div', {class: 'task-meta'}, [
    el('code', {class: 'task-id', text: message.id || '(no id)'})])]);
}

function messageRow(message) {
  const args = message.undecodable ? ''
    : [message.args, message.kwargs].filter((value) => value != null).join(' ');
  const argsCell = el('td', {class: 'task-args'}, [el('code', {text: args})]);
  if (message.note && !message.undecodable) argsCell.append(el('div', {class: 'hint', text: message.note}));
  return el('tr', {class: message.undecodable ? 'undecodable' : '',
    attrs: {'data-id': message.id, 'data-position': message.position}}, [
    el('td', {class: 'number', text: message.position + 1}),
    taskCell(message),
    argsCell,
    el('td', {class: 'eta', text: etaText(message.eta)}),
    el('td', {class: 'age', text: message.age == null ? '—' : formatDuration(message.age)}),
  ]);
}

async function loadPeek() {
  const name = peeking;
  const answer = await api(`${queueUrl(name, 'messages')}?limit=${encodeURIComponent(peekLimit.value)}`);
  if (name !== peeking) return;  // another queue was chosen meanwhile
  if (!answer.ok) {
    peekBody.replaceChildren();
    setText(peekSummary, `Could not peek: ${answer.data.error || `HTTP ${answer.status}`}`);
    return;
  }
  const {messages, depth} = answer.data;
  peekBody.replaceChildren(...messages.map(messageRow));
  setText(peekSummary, depth === 0 ? 'Nothing is waiting in this queue.'
    : `The next ${plural(messages.length, 'message')} of ${depth} waiting, in the order workers take them; `
      + 'they stay in the queue.');
}

function showPeek(name) {
  peeking = name;
  setText(document.getElementById('peek-queue'), name);
  peekSection.hidden = false;
  peekBody.replaceChildren();
  setText(peekSummary, 'Loading…');
  loadPeek();
}

peekLimit.addEventListener('change', () => {
  if (peeking !== null) loadPeek();
});

// ---- Purge (operator only) ---------------------------------------------------------------

const purgeSection = document.getElementById('purge');
const purgeStatus = document.getElementById('purge-status');
let purging = null;  // the queue the purge form is for

function showPurge(name) {
  if (!purgeSection) return;
  purging = name;
  setText(document.getElementById('purge-queue'), name);
  purgeSection.hidden = false;
  setText(purgeStatus, '');
  document.getElementById('purge-reason').focus();
}

async function purge(event) {
  event.preventDefault();
  const name = purging;
  const reasonInput = document.getElementById('purge-reason');
  const reason = reasonInput.value;
  if (name === null) return;
  if (!reason.trim()) {
    setText(purgeStatus, 'Say why you purge this queue: the reason goes into the audit log.');
    reasonInput.focus();
    return;
  }
  await loadQueues();  // the count in the confirmation is the latest one
  const entry = rows.get(name);
  const depth = entry && entry.data ? entry.data.depth : null;
  const count = depth == null ? 'every message' : `the ${plural(depth, 'message')}`;
  const confirmed = await confirmAction(`Purge queue ${name}?`,
    `This deletes ${count} waiting in queue “${name}”. They cannot be recovered. Reason: ${reason}`);
  if (!confirmed) return;
  const button = document.getElementById('purge-submit');
  button.disabled = true;
  const answer = await api(queueUrl(name, 'purge'), {method: 'POST', body: {reason}});
  button.disabled = false;
  if (answer.ok) {
    setText(purgeStatus, `Purged ${plural(answer.data.purged, 'message')} from queue ${name}.`);
    reasonInput.value = '';
    purgeSection.hidden = true;
    purging = null;
  } else {
    setText(purgeStatus, `Could not purge queue ${name}: ${answer.data.error || `HTTP ${answer.status}`}`);
  }
  loadQueues();
}

if (purgeSection) {
  document.getElementById('purge-form').addEventListener('submit', purge);
  document.getElementById('purge-cancel').addEventListener('click', () => {
    purgeSection.hidden = true;
    purging = null;
  });
}

// ---- Live --------------------------------------------------------------------------------

const socket = connectLive((live) => {
  // Every (re)connection: rejoin the dashboard room (for its `counts` pushes), then re-read.
  subscribe(live, {dashboard: true}, () => loadQueues());
});
// Sent and started tasks change the counts, and the queues with them.
socket.on('counts', () => refreshSoon());

loadQueues();  // at once, even before the live connection is up
