// The alerts page: every alert rule with its state (firing, pending, ok, unknown, disabled), since
// when, the figure and sentence it was judged on, its condition in words and its webhooks, re-read
// from GET /api/alerts every 2 s. Each rule opens its delivery history (notices and every attempt,
// newest first), re-read while open. Operators get the rule form (its fields follow the chosen
// kind: only the target it takes, the threshold with its unit and range, the window with what it
// means), and edit, enable/disable, send test and delete (behind a confirmation that names the
// rule); the server checks every rule and its message is shown next to the form. A viewer's page
// has none of it. A re-read changes only the text that changed, so open forms and history panes
// stay as they are. Everything from the server reaches the DOM as text only, never as HTML.

import {api, canAct, confirmAction, connectLive, el, formatDuration, formatTime, refresher, setText} from './common.js';

const root = document.getElementById('alerts-page');
const API = root.dataset.api;
const POLL_MS = 2000;
const SOON_MS = 300;
const HISTORY_LIMIT = 50;
const MAX_WEBHOOKS = 5;
const RULE_FIELDS = ['name', 'kind', 'task', 'queue', 'entry', 'threshold', 'window', 'webhooks', 'enabled'];
const TARGET_WORDS = {task: 'task name', queue: 'queue', entry: 'periodic entry'};

const summary = document.getElementById('alerts-summary');
const errorLine = document.getElementById('alerts-error');
const outcomeLine = document.getElementById('alerts-outcome');
const updated = document.getElementById('alerts-updated');
const empty = document.getElementById('alerts-empty');
const list = document.getElementById('rules');
const template = document.getElementById('rule-template');
const cards = new Map();  // rule id -> {node, rule, busy, historyKey, historyRead}
let kinds = {};
let now = Date.now() / 1000;  // the server's clock at the last read: "ago" is reckoned from it
let writes = 0;  // changes this page made: a read begun before one is stale when it lands

const plural = (count, word, many = `${word}s`) => `${count} ${count === 1 ? word : many}`;
const ruleUrl = (id) => `${API}/${encodeURIComponent(id)}`;
const refusal = (answer) => `${answer.status || 'no answer'}: ${answer.data.error || 'unknown error'}`;

// 300 -> "5 min", as the server's sentences say a window.
function span(seconds) {
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['min', 60]]) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size} ${unit}`;
  }
  return `${seconds} s`;
}

function ago(epoch) {
  if (epoch == null) return '—';
  const seconds = Math.max(0, now - epoch);
  return seconds < 1 ? 'just now' : `${formatDuration(seconds)} ago`;
}

// ---- a rule in words ----------------------------------------------------------------------------

function conditionText(rule) {
  const t = rule.threshold;
  const over = `in the last ${span(rule.window)}`;
  const hold = rule.window > 0 ? ` for ${span(rule.window)}` : '';
  switch (rule.kind) {
    case 'failure_rate':
      return `Fires when ${+(t * 100).toFixed(2)}% or more of the ${rule.task} tasks that ended ${over} `
        + `failed or were lost (judged over at least ${plural(rule.min_count, 'task')})`;
    case 'failure_count':
      return `Fires when ${t} or more ${rule.task} tasks failed or were lost ${over}`;
    case 'task_lost':
      return `Fires when ${t} or more ${rule.task ? `${rule.task} tasks` : 'tasks of any name'} were lost ${over}`;
    case 'no_worker':
      return `Fires when no worker is online${hold}`;
    case 'queue_no_consumers':
      return `Fires when queue ${rule.queue} has no consumer${hold}`;
    case 'queue_age':
      return `Fires when the oldest message of queue ${rule.queue} has waited more than ${span(t)}${hold}`;
    case 'long_running':
      return `Fires when ${rule.task ? `a ${rule.task} task` : 'a task of any name'} runs longer than ${span(t)}${hold}`;
    case 'periodic_missed':
      return `Fires when ${rule.entry ? `periodic entry ${rule.entry} is` : 'a periodic entry is'} more than `
        + `${span(t)} late${hold}`;
    default:
      return kinds[rule.kind] ? kinds[rule.kind].text : rule.kind;
  }
}

function valueText(rule, value) {
  if (value == null) return '—';
  switch (rule.kind) {
    case 'failure_rate': return `${(value * 100).toFixed(1)}%`;
    case 'failure_count': return plural(value, 'failure');
    case 'task_lost': return `${plural(value, 'task')} lost`;
    case 'no_worker': return `${plural(value, 'worker')} online`;
    case 'queue_no_consumers': return plural(value, 'consumer');
    default: return value === 0 ? '0 s' : formatDuration(value);
  }
}

// ---- the rules ----------------------------------------------------------------------------------

function cardFor(rule) {
  let card = cards.get(rule.id);
  if (card) return card;
  const node = template.content.firstElementChild.cloneNode(true);
  node.dataset.rule = rule.id;
  const title = node.querySelector('.rule-title');
  title.id = `title-${rule.id}`;
  node.setAttribute('aria-labelledby', title.id);
  card = {node, rule, busy: false, historyKey: '', historyRead: 0};
  const history = node.querySelector('.rule-history');
  history.addEventListener('toggle', () => { if (history.open) readHistory(card); });
  if (canAct) {
    node.querySelector('.rule-edit').addEventListener('click', () => startEdit(card));
    node.querySelector('.rule-toggle').addEventListener('click', () => toggle(card));
    node.querySelector('.rule-test').addEventListener('click', () => sendTest(card));
    node.querySelector('.rule-delete').addEventListener('click', () => remove(card));
  }
  cards.set(rule.id, card);
  return card;
}

function hookItem(hook) {
  return el('li', {}, [el('span', {class: 'hook-format', text: hook.format}), ' ',
    el('code', {class: 'hook-url', text: hook.url})]);
}

function renderCard(card, rule) {
  card.rule = rule;
  const {node} = card;
  const state = rule.state || {state: 'ok'};
  node.dataset.state = state.state;
  node.dataset.enabled = String(rule.enabled);
  const q = (selector) => node.querySelector(selector);
  setText(q('.rule-title'), rule.name);
  const badge = q('.rule-state');
  badge.dataset.state = state.state;
  setText(badge, state.state);
  setText(q('.rule-enabled'), rule.enabled ? 'enabled' : 'disabled');
  setText(q('.rule-condition'), conditionText(rule));
  // A rule ok since it was made has no change to date its state from: it dates from the rule.
  const since = state.since ?? (state.state === 'ok' ? rule.created_at : null);
  setText(q('.rule-since'), since == null ? '—' : `${ago(since)} (${formatTime(since)})`);
  setText(q('.rule-value'), valueText(rule, state.value));
  setText(q('.rule-detail'), state.detail || '—');
  setText(q('.rule-checked'), state.evaluated_at == null ? 'not yet' : ago(state.evaluated_at));
  const hooks = JSON.stringify(rule.webhooks);
  if (hooks !== card.hooks) {
    card.hooks = hooks;
    q('.rule-hooks').replaceChildren(...(rule.webhooks.length ? rule.webhooks.map(hookItem)
      : [el('li', {class: 'hint', text: 'none: the state shows here and in /metrics only'})]));
  }
  if (canAct) showButtons(card);
}

function showButtons(card) {
  const {node, rule} = card;
  const toggleButton = node.querySelector('.rule-toggle');
  setText(toggleButton, rule.enabled ? 'Disable' : 'Enable');
  const label = (verb) => `${verb} rule ${rule.name}`;
  node.querySelector('.rule-edit').setAttribute('aria-label', label('Edit'));
  toggleButton.setAttribute('aria-label', label(rule.enabled ? 'Disable' : 'Enable'));
  node.querySelector('.rule-test').setAttribute('aria-label', label('Send a test notice of'));
  node.querySelector('.rule-delete').setAttribute('aria-label', label('Delete'));
  // Busy, the buttons stay enabled (disabling one would drop the keyboard focus on it); act()
  // ignores a second click until the first is answered.
  node.setAttribute('aria-busy', String(card.busy));
  const test = node.querySelector('.rule-test');
  test.disabled = rule.webhooks.length === 0;
  if (test.disabled) test.title = 'This rule has no webhook to send a test to.';
  else test.removeAttribute('title');
}

function render(data) {
  now = data.now;
  if (data.kinds && Object.keys(kinds).length === 0) {
    kinds = data.kinds;
    if (form) fillKinds();
  }
  const seen = new Set();
  let previous = null;
  for (const rule of data.rules) {
    seen.add(rule.id);
    const card = cardFor(rule);
    renderCard(card, rule);
    // In the server's order, moving a card only when it is out of place: a moved card would lose
    // the focus of a button and scroll the history pane a reader is in.
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== card.node) list.insertBefore(card.node, expected);
    previous = card.node;
  }
  for (const [id, card] of [...cards]) {
    if (seen.has(id)) continue;
    if (card.node.contains(document.activeElement)) document.getElementById('rules-title').focus();
    card.node.remove();
    cards.delete(id);
    if (form && editing === id) {
      resetForm();
      setText(formError, 'The rule you were editing was deleted.');
    }
  }
  empty.hidden = data.rules.length > 0;
  const count = (state) => data.rules.filter((rule) => rule.state && rule.state.state === state).length;
  const parts = [`${plural(data.rules.length, 'rule')}`];
  for (const state of ['firing', 'pending', 'unknown']) if (count(state)) parts.push(`${count(state)} ${state}`);
  const by = data.evaluated_by ? `judged by ${data.evaluated_by}` : 'no server is judging the rules yet';
  const waiting = data.pending_deliveries
    ? ` · ${plural(data.pending_deliveries, 'delivery', 'deliveries')} waiting` : '';
  setText(summary, `${parts.join(', ')} · ${by}${waiting}`);
  summary.dataset.firing = String(count('firing'));
  updated.setAttribute('datetime', new Date(data.now * 1000).toISOString());
  setText(updated, new Date(data.now * 1000).toLocaleTimeString());
}

async function read() {
  const before = writes;
  const answer = await api(API);
  // A change answered meanwhile (a delete, a disable): this answer may predate it, and drawing it
  // would bring a deleted card back for a moment. The read the change asked for follows.
  if (before !== writes) return;
  if (!answer.ok) {
    updated.parentElement.classList.add('stale');
    errorLine.hidden = false;
    setText(errorLine, `Could not read the alert rules (${refusal(answer)}); what is shown may be out of date.`);
    return;
  }
  errorLine.hidden = true;
  updated.parentElement.classList.remove('stale');
  render(answer.data);
  const open = [...cards.values()].filter((card) => card.node.querySelector('.rule-history').open);
  await Promise.all(open.map(readHistory));
}

const {load} = refresher(read, {every: POLL_MS, soonEvery: SOON_MS});

// ---- a rule's delivery history ------------------------------------------------------------------

function historyRow(entry) {
  const delivery = entry.event === 'delivery';
  const url = delivery ? [el('span', {text: entry.url}), ' ', el('span', {class: 'hint', text: `(${entry.format})`})]
    : [el('span', {class: 'hint', text: entry.webhooks == null ? '' : `to ${plural(entry.webhooks, 'webhook')}`})];
  let said = entry.error || '';
  if (!delivery) said = entry.value == null ? entry.detail : `${entry.detail} (value ${entry.value})`;
  return el('tr', {attrs: {'data-event': entry.event, 'data-outcome': entry.outcome}}, [
    el('td', {text: formatTime(entry.at), attrs: {title: ago(entry.at)}}),
    el('td', {class: 'history-event', text: delivery ? `delivery of the ${entry.status} notice` : `${entry.event} notice`}),
    el('td', {class: 'history-url'}, url),
    el('td', {class: 'number history-attempt', text: entry.attempt}),
    el('td', {class: 'number history-status', text: entry.http_status}),
    el('td', {class: 'history-outcome', text: entry.outcome, attrs: {'data-outcome': entry.outcome}}),
    el('td', {class: 'history-error', text: said}),
    el('td', {class: 'history-next', text: entry.next_attempt_at == null ? '' : formatTime(entry.next_attempt_at)}),
  ]);
}

async function readHistory(card) {
  const reading = ++card.historyRead;
  const answer = await api(`${ruleUrl(card.rule.id)}/history?limit=${HISTORY_LIMIT}`);
  if (reading !== card.historyRead) return;  // a newer read was sent meanwhile
  const note = card.node.querySelector('.history-note');
  const table = card.node.querySelector('.history-table');
  if (!answer.ok) {
    setText(note, `Could not read the history (${refusal(answer)}).`);
    return;
  }
  const entries = answer.data.history;
  const key = JSON.stringify(entries);
  if (key === card.historyKey) return;  // unchanged: the rows (and a selection in them) stay
  card.historyKey = key;
  table.hidden = entries.length === 0;
  setText(note, entries.length ? `The last ${plural(entries.length, 'entry', 'entries')}, newest first.`
    : 'Nothing yet: no notice has been sent for this rule.');
  table.querySelector('tbody').replaceChildren(...entries.map(historyRow));
}

// ---- acting on a rule (operators) ---------------------------------------------------------------

// A rule as PUT takes it: all of its settings (a PUT replaces them), with `changes`.
function ruleBody(rule, changes) {
  const body = {};
  for (const field of RULE_FIELDS) body[field] = rule[field];
  if (rule.kind === 'failure_rate') body.min_count = rule.min_count;
  return {...body, ...changes};
}

async function act(card, request, said) {
  if (card.busy) return null;
  card.busy = true;
  showButtons(card);
  const outcome = card.node.querySelector('.rule-outcome');
  const answer = await request();
  writes += 1;
  card.busy = false;
  showButtons(card);
  outcome.classList.toggle('error', !answer.ok);
  setText(outcome, answer.ok ? said(answer.data) : `Refused (${refusal(answer)})`);
  if (answer.ok) load();
  return answer.ok ? answer.data : null;
}

function toggle(card) {
  const enabled = !card.rule.enabled;
  return act(card, () => api(ruleUrl(card.rule.id), {method: 'PUT', body: ruleBody(card.rule, {enabled})}),
    () => (enabled ? 'Enabled: judged again from the next evaluation.' : 'Disabled: not judged until enabled.'));
}

async function sendTest(card) {
  const done = await act(card, () => api(`${ruleUrl(card.rule.id)}/test`, {method: 'POST'}),
    (data) => `A test notice is queued for ${plural(data.webhooks, 'webhook')}; the history shows its delivery.`);
  if (done) card.node.querySelector('.rule-history').open = true;
}

async function remove(card) {
  const {rule} = card;
  const outcome = card.node.querySelector('.rule-outcome');
  outcome.classList.remove('error');
  if (!(await confirmAction(`Delete the rule “${rule.name}”?`, 'It stops being judged at once and its '
    + 'history goes with it; notices already queued are still delivered.'))) {
    setText(outcome, 'Delete cancelled.');
    return;
  }
  const done = await act(card, () => api(ruleUrl(rule.id), {method: 'DELETE'}), () => 'Deleted.');
  if (!done) return;
  setText(outcomeLine, `Deleted the rule “${rule.name}”.`);
  if (card.node.contains(document.activeElement)) document.getElementById('rules-title').focus();
  card.node.remove();
  cards.delete(rule.id);
  if (form && editing === rule.id) resetForm();
  empty.hidden = cards.size > 0;
}

// ---- the rule form (operators) ------------------------------------------------------------------

const form = canAct ? document.getElementById('rule-form') : null;
const field = (name) => document.getElementById(`rule-${name}`);
const formTitle = document.getElementById('rule-form-title');
const formError = document.getElementById('rule-form-error');
const formWarnings = document.getElementById('rule-form-warnings');
const formOutcome = document.getElementById('rule-form-outcome');
const hookList = document.getElementById('rule-webhook-list');
const addHook = document.getElementById('rule-add-webhook');
let editing = null;  // the id of the rule the form edits; null: it creates one
let submitting = false;

function fillKinds() {
  const kind = field('kind');
  kind.replaceChildren(...Object.entries(kinds).map(([name, about]) =>
    el('option', {text: `${name}: ${about.text}`, attrs: {value: name}})));
  followKind();
}

function range(kind) {
  const [low, high] = kind.threshold;
  if (low === 0 && high === 1 && !kind.whole) return 'above 0 and at most 1: 0.2 fires at 20%';
  return `${low} to ${high}`;
}

// Show the fields the chosen kind takes, each saying its unit, range and meaning.
function followKind() {
  const kind = kinds[field('kind').value];
  if (!kind) return;
  setText(document.getElementById('rule-kind-text'), kind.counts
    ? 'Counts the tasks that ended in the window; fires as soon as the count is over the threshold.'
    : 'Judges the present state; fires once the condition has held for the hold time.');
  for (const box of form.querySelectorAll('[data-target]')) {
    const target = box.dataset.target;
    box.hidden = target !== kind.target;
    if (target === kind.target) {
      setText(box.querySelector('.field-hint'), kind.required ? 'Required.'
        : `Optional: leave it empty to watch any ${TARGET_WORDS[target].replace(' name', '')}.`);
    }
  }
  const threshold = field('threshold');
  document.getElementById('rule-threshold-field').hidden = !kind.threshold;
  if (kind.threshold) {
    setText(threshold.labels[0], `Threshold (${kind.unit})`);
    setText(document.getElementById('rule-threshold-hint'), `${range(kind)}`
      + `${kind.whole ? ', a whole number' : ''}${kind.default == null ? '. Required.' : `. Default ${kind.default}.`}`);
    threshold.step = kind.whole ? '1' : 'any';
    threshold.min = String(kind.threshold[0]);
    threshold.max = String(kind.threshold[1]);
    threshold.placeholder = kind.default == null ? '' : String(kind.default);
  }
  const hold = field('window');
  setText(hold.labels[0], kind.counts ? 'Window (seconds)' : 'Hold for (seconds)');
  setText(document.getElementById('rule-window-hint'), kind.counts
    ? 'The tasks that ended in this many seconds are counted: 60 to 86400 (a day). Required.'
    : 'How long the condition must hold before the rule fires: 0 (at once) to 604800 (a week). Default 0.');
  hold.min = kind.counts ? '60' : '0';
  hold.max = kind.counts ? '86400' : '604800';
  hold.placeholder = kind.counts ? 'e.g. 300' : '0';
  document.getElementById('rule-min-count-field').hidden = field('kind').value !== 'failure_rate';
}

function renumberHooks() {
  [...hookList.children].forEach((item, index) => {
    item.querySelector('.hook-url').setAttribute('aria-label', `Webhook ${index + 1} URL`);
    item.querySelector('.hook-format').setAttribute('aria-label', `Webhook ${index + 1} format`);
    item.querySelector('.hook-remove').setAttribute('aria-label', `Remove webhook ${index + 1}`);
  });
  addHook.disabled = hookList.children.length >= MAX_WEBHOOKS;
}

function addWebhook(hook = {url: '', format: 'json'}) {
  const url = el('input', {class: 'hook-url', attrs: {type: 'url', maxlength: 2000, autocomplete: 'off',
    placeholder: 'https://hooks.example.com/…'}});
  url.value = hook.url;
  const format = el('select', {class: 'hook-format'}, [
    el('option', {text: 'JSON', attrs: {value: 'json'}}), el('option', {text: 'Slack', attrs: {value: 'slack'}})]);
  format.value = hook.format;
  const drop = el('button', {class: 'secondary hook-remove', text: 'Remove', attrs: {type: 'button'}});
  const item = el('li', {class: 'webhook'}, [url, format, drop]);
  drop.addEventListener('click', () => {
    item.remove();
    renumberHooks();
    addHook.focus();
  });
  hookList.append(item);
  renumberHooks();
  return url;
}

// A number field: undefined when empty (the server's default or its "needs" message), NaN when
// what was typed is not a number.
function numberIn(input) {
  if (input.validity.badInput) return NaN;
  return input.value.trim() === '' ? undefined : Number(input.value);
}

// The form as the API takes it: only the fields the kind takes; null when a number is garbled.
function formBody() {
  const kindName = field('kind').value;
  const kind = kinds[kindName] || {};
  const body = {name: field('name').value, kind: kindName, enabled: field('enabled').checked};
  if (kind.target) {
    const target = field(kind.target).value.trim();
    if (target) body[kind.target] = target;
  }
  const numbers = {window: 'window', threshold: kind.threshold ? 'threshold' : null,
    min_count: kindName === 'failure_rate' ? 'min-count' : null};
  for (const [key, id] of Object.entries(numbers)) {
    if (!id) continue;
    const value = numberIn(field(id));
    if (Number.isNaN(value)) {
      setText(formError, `The ${field(id).labels[0].textContent.toLowerCase()} must be a number.`);
      field(id).focus();
      return null;
    }
    if (value !== undefined) body[key] = value;
  }
  body.webhooks = [...hookList.children].map((item) => ({url: item.querySelector('.hook-url').value.trim(),
    format: item.querySelector('.hook-format').value})).filter((hook) => hook.url);
  return body;
}

function clearMessages() {
  setText(formError, '');
  formWarnings.replaceChildren();
  setText(formOutcome, '');
}

function resetForm() {
  editing = null;
  delete form.dataset.editing;
  form.reset();
  hookList.replaceChildren();
  renumberHooks();
  setText(formTitle, 'New rule');
  setText(field('submit'), 'Create rule');
  field('cancel').hidden = true;
  followKind();
}

function startEdit(card) {
  const {rule} = card;
  resetForm();
  clearMessages();
  editing = rule.id;
  form.dataset.editing = rule.id;
  setText(formTitle, `Edit the rule “${rule.name}”`);
  setText(field('submit'), 'Save rule');
  field('cancel').hidden = false;
  field('name').value = rule.name;
  field('kind').value = rule.kind;
  followKind();
  for (const target of Object.keys(TARGET_WORDS)) field(target).value = rule[target] ?? '';
  field('threshold').value = rule.threshold ?? '';
  field('window').value = rule.window ?? '';
  field('min-count').value = rule.min_count ?? '';
  for (const hook of rule.webhooks) addWebhook(hook);
  field('enabled').checked = rule.enabled;
  formTitle.scrollIntoView({block: 'start'});
  formTitle.focus();
}

async function submit(event) {
  event.preventDefault();
  if (submitting) return;
  clearMessages();
  const body = formBody();
  if (!body) return;
  const id = editing;
  submitting = true;
  field('submit').disabled = true;
  const answer = await api(id ? ruleUrl(id) : API, {method: id ? 'PUT' : 'POST', body});
  writes += 1;
  submitting = false;
  field('submit').disabled = false;
  if (!answer.ok) {
    setText(formError, `${id ? 'Not saved' : 'Not created'} (${refusal(answer)})`);
    return;
  }
  formWarnings.replaceChildren(...(answer.data.warnings || []).map((text) => el('li', {text})));
  setText(formOutcome, `${id ? 'Saved' : 'Created'} the rule “${answer.data.name}”.`);
  resetForm();
  load();
}

if (form) {
  field('kind').addEventListener('change', followKind);
  addHook.addEventListener('click', () => addWebhook().focus());
  field('cancel').addEventListener('click', () => {
    const card = cards.get(editing);
    resetForm();
    clearMessages();
    (card ? card.node.querySelector('.rule-edit') : field('name')).focus();
  });
  form.addEventListener('submit', submit);
}

// ---- live ---------------------------------------------------------------------------------------

// The rules' states come from the poll; the live connection keeps the header's indicator true and
// re-reads at once after a reconnection.
connectLive(() => load());
