// Small SVG charts drawn with DOM calls (no library, no HTML strings).

const SVG = 'http://www.w3.org/2000/svg';

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

// Stacked bars per x: series = [{name, class, values: [..]}]; labels for the title/tooltip.
// The <svg> gets a text alternative through its aria-label, set by the caller.
export function barChart(svg, labels, series, {height = 120, width = 600} = {}) {
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const max = Math.max(1, ...totals);
  const step = width / Math.max(1, labels.length);
  labels.forEach((label, i) => {
    let y = height;
    for (const s of series) {
      const value = s.values[i] || 0;
      if (!value) continue;
      const h = (value / max) * (height - 4);
      y -= h;
      const rect = svgEl('rect', {x: i * step + 1, y, width: Math.max(1, step - 2), height: h, class: s.class});
      const title = svgEl('title', {});
      title.textContent = `${label}: ${value} ${s.name}`;
      rect.append(title);
      svg.append(rect);
    }
  });
  return max;
}

// A line through [x, y] points, scaled to the box; yMax fixes the top (e.g. a known total).
// A point above the top (a task reporting more than its total) is drawn at the top.
export function lineChart(svg, points, {height = 120, width = 600, yMax = null} = {}) {
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  points = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (points.length < 2) return;
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(...xs);
  const spanX = Math.max(1e-9, Math.max(...xs) - x0);
  const top = Math.max(1e-9, yMax ?? Math.max(...points.map((p) => p[1])));
  const scale = (y) => Math.min(Math.max(y / top, 0), 1);
  const coords = points.map(([x, y]) => `${((x - x0) / spanX) * width},${height - scale(y) * (height - 4)}`);
  svg.append(svgEl('polyline', {points: coords.join(' '), class: 'line', fill: 'none'}));
}
