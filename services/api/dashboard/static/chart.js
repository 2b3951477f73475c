// Line charts drawn as inline SVG: no chart library, crisp at any zoom, inspectable in tests
// (each series is one <polyline> whose data-points attribute counts the points drawn).

import {el, formatNumber, svg} from "./dom.js";

export const PALETTE = ["#4f46e5", "#0891b2", "#ea580c", "#16a34a", "#db2777", "#ca8a04", "#7c3aed", "#475569"];

const WIDTH = 640;
const HEIGHT = 240;
const MARGIN = {top: 12, right: 16, bottom: 28, left: 60};

/** About `count` round tick values covering [min, max] (1-2-5 steps). */
function niceTicks(min, max, count) {
  if (min === max) return [min];
  const rough = (max - min) / count;
  const power = Math.pow(10, Math.floor(Math.log10(rough)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) || 10 * power;
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

// From this many points a series is drawn faint with a smoothed line over it: per-step losses of small batches are
// a noisy band in which the trend is hard to see.
export const SMOOTH_FROM = 200;

/**
 * Centred moving average over [[step, value], ...], a window of about 1/40 of the run: unlike an exponential average
 * it does not lag behind a falling loss. Near the ends the window shrinks evenly, so the line keeps its end points.
 */
export function smoothed(points) {
  const half = Math.max(1, Math.floor(points.length / 80));
  const sums = [0];
  for (const [, y] of points) sums.push(sums[sums.length - 1] + y);
  return points.map(([x], i) => {
    const reach = Math.min(half, i, points.length - 1 - i);
    return [x, (sums[i + reach + 1] - sums[i - reach]) / (2 * reach + 1)];
  });
}

function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

function paddedRange(lo, hi) {
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * 0.06;
  return [lo - pad, hi + pad];
}

/**
 * A chart card for several series sharing one axis.
 * series: [{name, points: [[step, value], ...]}], sorted by step; non-finite values are skipped.
 */
export function lineChart(title, series) {
  const clean = series
    .map((s, i) => ({
      name: s.name,
      color: PALETTE[i % PALETTE.length],
      points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)),
    }))
    .filter((s) => s.points.length > 0);

  const card = el("section", {class: "chart-card", "data-chart": title});
  const latest = el("div", {class: "chart-legend"},
    clean.map((s) => el("span", {class: "legend-item", "data-series": s.name},
      el("i", {class: "swatch", style: `background:${s.color}`}),
      el("span", {class: "legend-name"}, s.name),
      el("b", {class: "legend-value"}, formatNumber(s.points[s.points.length - 1][1])))));
  card.append(el("header", {class: "chart-head"}, el("h3", null, title), latest));

  if (clean.length === 0) {
    card.append(el("div", {class: "chart-empty"}, "No data yet"));
    return card;
  }

  const allX = clean.flatMap((s) => s.points.map((p) => p[0]));
  const allY = clean.flatMap((s) => s.points.map((p) => p[1]));
  let [x0, x1] = extent(allX);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const [y0, y1] = paddedRange(...extent(allY));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (x) => MARGIN.left + ((x - x0) / (x1 - x0)) * plotW;
  const sy = (y) => MARGIN.top + (1 - (y - y0) / (y1 - y0)) * plotH;

  const grid = svg("g", {class: "grid"});
  for (const t of niceTicks(y0, y1, 4)) {
    grid.append(svg("line", {x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: sy(t), y2: sy(t)}));
    grid.append(svg("text", {x: MARGIN.left - 8, y: sy(t) + 4, "text-anchor": "end", class: "tick"}, formatNumber(t)));
  }
  const xTicks = niceTicks(x0, x1, 6).filter((t) => Number.isInteger(t));
  for (const t of xTicks) {
    grid.append(svg("text", {x: sx(t), y: HEIGHT - 8, "text-anchor": "middle", class: "tick"}, String(t)));
  }
  grid.append(svg("line", {class: "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right,
    y1: MARGIN.top + plotH, y2: MARGIN.top + plotH}));

  const lines = svg("g", {class: "series"});
  const showDots = clean.reduce((n, s) => n + s.points.length, 0) <= 120;
  const coords = (points) => points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
  for (const s of clean) {
    const smooth = s.points.length >= SMOOTH_FROM;
    lines.append(svg("polyline", {points: coords(s.points), stroke: s.color, "data-series": s.name,
      "data-points": s.points.length, class: smooth ? "line line-raw" : "line"}));
    if (smooth) {
      lines.append(svg("polyline", {points: coords(smoothed(s.points)), stroke: s.color, "data-smoothed": s.name,
        "data-points": s.points.length, class: "line"}));
    }
    if (showDots) {
      for (const [x, y] of s.points) lines.append(svg("circle", {cx: sx(x), cy: sy(y), r: 2.2, fill: s.color}));
    }
  }

  // Hover: a guide line at the nearest step and a tooltip with every series' value there.
  const guide = svg("line", {class: "guide", y1: MARGIN.top, y2: MARGIN.top + plotH, visibility: "hidden"});
  const overlay = svg("rect", {x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, class: "overlay"});
  const chart = svg("svg", {viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img",
    "aria-label": `${title} by step`}, grid, lines, guide, overlay);
  const tooltip = el("div", {class: "chart-tooltip", hidden: true});
  const steps = [...new Set(allX)].sort((a, b) => a - b);
  const byStep = clean.map((s) => new Map(s.points));

  overlay.addEventListener("mousemove", (event) => {
    const box = chart.getBoundingClientRect();
    const x = x0 + ((event.clientX - box.left) / box.width * WIDTH - MARGIN.left) / plotW * (x1 - x0);
    const step = steps.reduce((best, s) => (Math.abs(s - x) < Math.abs(best - x) ? s : best), steps[0]);
    guide.setAttribute("x1", sx(step));
    guide.setAttribute("x2", sx(step));
    guide.setAttribute("visibility", "visible");
    tooltip.replaceChildren(el("div", {class: "tooltip-step"}, `step ${step}`),
      ...clean.map((s, i) => byStep[i].has(step)
        ? el("div", null, el("i", {class: "swatch", style: `background:${s.color}`}), `${s.name}: `,
          el("b", null, formatNumber(byStep[i].get(step))))
        : null).filter(Boolean));
    tooltip.hidden = false;
    const left = (sx(step) / WIDTH) * box.width;
    tooltip.style.left = `${Math.min(left + 12, box.width - 180)}px`;
  });
  overlay.addEventListener("mouseleave", () => {
    guide.setAttribute("visibility", "hidden");
    tooltip.hidden = true;
  });

  card.append(el("div", {class: "chart-body"}, chart, tooltip));
  return card;
}
