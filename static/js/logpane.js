// A task's log pane: its log lines, live. The backlog comes from GET /api/tasks/<id>/logs?after=N,
// then the `log` pushes of the task's room; both carry the lines' numbers, so after a reload or a
// reconnection the pane asks for what follows the last line it holds: no gap, no duplicate. A push
// that skips numbers (or carries none: too many lines) is filled from the API the same way.
// Follow keeps the newest line in view; Pause holds new lines back until resumed. A level and a
// search narrow what is shown, not what is kept. Lines reach the DOM as text only.
import {api, el, setText} from './common.js';

const KEEP = 1000;  // as the server keeps: the oldest go
const LEVELS = ['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'];

export function logPane(root, {url}) {
  const list = root.querySelector('.log-lines');
  const status = root.querySelector('.log-status');
  const pause = root.querySelector('.log-pause');
  const level = root.querySelector('.log-level');
  const search = root.querySelector('.log-search');
  const lines = [];        // {seq, at, level, logger, message, node}, oldest first
  let last = 0;            // the newest line number held
  let held = [];           // lines that came while paused
  let paused = false;
  let counts = {dropped: 0, lost: 0};
  let reading = null;      // the backlog read under way, if any

  function shown(line) {
    const wanted = LEVELS.indexOf(level.value);
    if (LEVELS.indexOf(line.level) < wanted) return false;
    const text = search.value.trim().toLowerCase();
    return !text || `${line.logger} ${line.message}`.toLowerCase().includes(text);
  }

  function nodeOf(line) {
    const when = new Date(line.at * 1000);
    return el('li', {class: 'log-line', attrs: {'data-seq': String(line.seq), 'data-level': line.level}}, [
      el('time', {class: 'log-time', text: when.toLocaleTimeString(), attrs: {datetime: when.toISOString()}}),
      el('span', {class: 'log-level-badge', text: line.level}),
      el('span', {class: 'log-logger', text: line.logger}),
      el('span', {class: 'log-message', text: line.message}),
    ]);
  }

  function describe() {
    const parts = [`${lines.length} line${lines.length === 1 ? '' : 's'}`];
    if (counts.dropped) parts.push(`${counts.dropped} older dropped (the newest ${KEEP} are kept)`);
    if (counts.lost) parts.push(`${counts.lost} lost (the worker could not write them)`);
    if (paused && held.length) parts.push(`${held.length} new, held while paused`);
    setText(status, parts.join(' · '));
  }

  function follow() {
    if (!paused) list.scrollTop = list.scrollHeight;
  }

  function show(batch) {
    for (const line of batch) {
      line.node = nodeOf(line);
      line.node.hidden = !shown(line);
      lines.push(line);
      list.append(line.node);
    }
    while (lines.length > KEEP) lines.shift().node.remove();
    follow();
  }

  // Take numbered lines (from the API or a push), in order, each once.
  function take(batch) {
    const fresh = batch.filter((line) => Number.isInteger(line.seq) && line.seq > last);
    if (!fresh.length) return;
    last = fresh[fresh.length - 1].seq;
    if (paused) held.push(...fresh);
    else show(fresh);
    describe();
  }

  async function readAfter() {
    if (reading) return reading;
    reading = (async () => {
      for (;;) {
        const answer = await api(`${url}?after=${last}`);
        if (!answer.ok) {
          if (answer.status !== 404) setText(status, `Log lines could not be read (${answer.status || 'no answer'}).`);
          return;
        }
        counts = {dropped: answer.data.dropped, lost: answer.data.lost};
        take(answer.data.lines);
        describe();
        if (!answer.data.lines.length || last >= answer.data.last) return;
      }
    })();
    try {
      await reading;
    } finally {
      reading = null;
    }
  }

  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    setText(pause, paused ? 'Resume' : 'Pause');
    if (!paused && held.length) {
      show(held);
      held = [];
    }
    describe();
  });
  const refilter = () => {
    for (const line of lines) line.node.hidden = !shown(line);
    follow();
  };
  level.addEventListener('change', refilter);
  search.addEventListener('input', refilter);

  return {
    // After every (re)connection: what came meanwhile, from the last line held.
    sync: () => readAfter(),
    // A `log` push: its lines if they follow on, else a read that fills the gap.
    onLog(packet) {
      if (!packet || !Number.isInteger(packet.first) || !Number.isInteger(packet.last)) return;
      if (packet.last <= last) return;
      if (Array.isArray(packet.lines) && packet.first <= last + 1 && !reading) take(packet.lines);
      else readAfter();
    },
  };
}
