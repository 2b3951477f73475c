// Small DOM and formatting helpers. Server text is only ever set through textContent, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function applyAttributes(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function appendChildren(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Build an HTML element: el("a", {href: "#"}, "text", otherNode). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  applyAttributes(node, attrs);
  appendChildren(node, children);
  return node;
}

/** Build an SVG element with the SVG namespace. */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  applyAttributes(node, attrs);
  appendChildren(node, children);
  return node;
}

/** Replace all children of a node. */
export function replaceChildren(node, ...children) {
  node.replaceChildren();
  appendChildren(node, children);
  return node;
}

/** UNIX seconds to a local "2026-11-27 14:03:12" (sortable, unambiguous). */
export function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "3 min ago" style age, for the jobs table. */
export function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const delta = Math.max(0, Date.now() / 1000 - seconds);
  if (delta < 60) return `${Math.floor(delta)} s ago`;
  if (delta < 3600) return `${Math.floor(delta / 60)} min ago`;
  if (delta < 86400) return `${Math.floor(delta / 3600)} h ago`;
  return `${Math.floor(delta / 86400)} d ago`;
}

/** Time left until a UNIX-second stamp, as "about 3 min left" (the API's estimated_finish of a running job). */
export function formatRemaining(seconds) {
  if (seconds === null || seconds === undefined) return null;
  const left = seconds - Date.now() / 1000;
  if (left < 60) return "under a minute left";
  if (left < 3600) return `about ${Math.round(left / 60)} min left`;
  return `about ${(left / 3600).toFixed(1)} h left`;
}

/** Elapsed time between two UNIX-second stamps as "1h 02m" / "3m 05s". */
export function formatDuration(start, end) {
  if (!start) return "—";
  const total = Math.max(0, Math.round((end || Date.now() / 1000) - start));
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  return `${m}m ${String(s).padStart(2, "0")}s`;
}

/** A metric value with four significant digits; tiny and huge values in exponent form. */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude < 1e-3 || magnitude >= 1e6) return value.toExponential(2);
  if (Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(4)));
}

/** Integer with thousands separators. */
export function formatCount(value) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("en-US");
}

const STATUS_LABELS = {
  validating_files: "validating",
  queued: "queued",
  running: "running",
  paused: "paused",
  succeeded: "succeeded",
  failed: "failed",
  cancelled: "cancelled",
};

/** A coloured pill for a job status. */
export function statusBadge(status) {
  return el("span", {class: `badge badge-${status || "unknown"}`, "data-status": status},
    STATUS_LABELS[status] || status || "unknown");
}

export const ACTIVE_STATUSES = new Set(["validating_files", "queued", "running", "paused"]);
export const LIVE_STATUSES = new Set(["validating_files", "queued", "running"]);
