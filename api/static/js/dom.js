// Small DOM and formatting helpers. Nothing here writes HTML strings or style attributes:
// the page's Content-Security-Policy forbids inline styles, and text always goes in as text.

/** h("a", {href: "#/", class: "x", onclick: fn, dataset: {id: 1}}, "text", child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value" || key === "checked" || key === "disabled" || key === "selected") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

// A job's statuses, in the order a job meets them, and those it never leaves: filled from
// GET /states (core/states.py is their one home) before the first view shows (app.js).
export const JOB_STATUSES = [];
export const TERMINAL = new Set();
// A sweep's ends, from GET /states' `sweep` as well.
export const SWEEP_TERMINAL = new Set();

/** Take the states from GET /states' answer ({job: {statuses, terminal}, dataset, sweep}). */
export function learnStates(states) {
  JOB_STATUSES.splice(0, JOB_STATUSES.length, ...states.job.statuses);
  TERMINAL.clear();
  for (const status of states.job.terminal) TERMINAL.add(status);
  SWEEP_TERMINAL.clear();
  for (const status of states.sweep.terminal) SWEEP_TERMINAL.add(status);
}

export function badge(status) {
  return h("span", {class: `badge ${status}`, dataset: {status}}, status);
}

/** A progress bar (div > span, width set through CSSOM, which the CSP allows). */
export function progressBar(job) {
  const bar = h("div", {class: "bar"}, h("span"));
  updateProgressBar(bar, job);
  return bar;
}

export function updateProgressBar(bar, job) {
  const {step, total_steps: total} = job.progress || {};
  const fraction = job.status === "succeeded" ? 1 : total ? Math.min(1, step / total) : 0;
  bar.className = `bar ${job.status}`;
  bar.firstChild.style.width = `${(fraction * 100).toFixed(1)}%`;
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
}

export function progressText(job) {
  const p = job.progress || {};
  const epochs = job.spec?.hyperparameters?.epochs;
  const parts = [];
  if (epochs) parts.push(`epoch ${Math.max(p.epoch || 0, 0)}/${epochs}`);
  if (p.total_steps) parts.push(`step ${p.step}/${p.total_steps}`);
  return parts.join(" · ");
}

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return value.toFixed(digits).replace(/\.?0+$/, "") || "0";
}

export function fmtPercent(value, digits = 1) {
  if (value === null || value === undefined) return "—";
  return `${(value * 100).toFixed(digits)}%`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function fmtAgo(iso) {
  if (!iso) return "—";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

/** Wall time of a job: started -> finished (or now while it runs). */
export function jobDuration(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? new Date(job.finished_at) : TERMINAL.has(job.status) ? null : new Date();
  return end ? end - new Date(job.started_at) : null;
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

/** Calls fn at most once per animation frame, with the latest arguments. */
export function throttleFrame(fn) {
  let pending = false;
  let args = [];
  return (...a) => {
    args = a;
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; fn(...args); });
  };
}
