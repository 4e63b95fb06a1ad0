import { h } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';

/** A line chart of (x, y) points as inline SVG, with its maximum labelled. */
export function lineChart(points: [number, number][], label: string, unit: string): Element {
  const width = 300;
  const height = 90;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const max = Math.max(1e-9, ...points.map((p) => p[1]));
  const first = points[0]?.[0] ?? 0;
  const span = Math.max(1, (points.at(-1)?.[0] ?? 1) - first);
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute(
    'points',
    points
      .map(
        ([x, y]) =>
          `${(((x - first) / span) * width).toFixed(1)},${(height - 12 - (y / max) * (height - 20)).toFixed(1)}`,
      )
      .join(' '),
  );
  svg.append(line);
  const text = document.createElementNS(SVG, 'text');
  text.setAttribute('x', '2');
  text.setAttribute('y', '10');
  text.textContent = points.length === 0 ? `${label}: no data yet` : `${label} (max ${round(max)} ${unit})`;
  svg.append(text);
  return h('div', {}, svg);
}

function round(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n.toFixed(3);
}
