// The host page's side of the widget tests: records every event the widgets dispatch.
'use strict';

window.events = [];
window.__pwned = false;

function shadowText(widget, part) {
  const node = widget.shadowRoot && widget.shadowRoot.querySelector(`[part~="${part}"]`);
  return node ? node.textContent : null;
}

for (const type of ['pulse-progress', 'pulse-success', 'pulse-failure']) {
  document.addEventListener(type, (event) => {
    const widget = event.target;
    const detail = event.detail || {};
    const bar = widget.shadowRoot && widget.shadowRoot.querySelector('[part~="bar"]');
    window.events.push({
      type,
      widget: widget.id,
      id: detail.id,
      status: detail.status,
      percent: detail.progress ? detail.progress.percent : null,
      now: bar ? bar.getAttribute('aria-valuenow') : null,
      statusText: shadowText(widget, 'status'),
      eta: shadowText(widget, 'eta'),
      connection: widget.dataset.connection,
    });
  });
}

// Every text the status part shows, in order, per widget (however briefly it showed).
window.statusTexts = {};
document.addEventListener('DOMContentLoaded', async () => {
  await customElements.whenDefined('pulse-progress');
  for (const widget of document.querySelectorAll('pulse-progress')) {
    const status = widget.shadowRoot.querySelector('[part~="status"]');
    const seen = window.statusTexts[widget.id] = [status.textContent];
    new MutationObserver(() => {
      if (seen[seen.length - 1] !== status.textContent) seen.push(status.textContent);
    }).observe(status, {childList: true, characterData: true, subtree: true});
  }
});
