// What the sweep views share: a sweep's trial counts, its metric's values as a person reads
// them, and the parameters it samples (its spec.space, in the order the spec lists them).
import {TERMINAL, fmtNumber, fmtPercent} from "./dom.js";

/** Trials that have ended, whatever their end (GET /states' terminal job statuses). */
export function trialsDone(sweep) {
  const t = sweep.trials || {};
  return [...TERMINAL].reduce((sum, status) => sum + (t[status] || 0), 0);
}

/** An accuracy as a percentage, a loss as a number. */
export function fmtMetric(metric, value) {
  return metric?.endsWith("_accuracy") ? fmtPercent(value, 2) : fmtNumber(value);
}

/** A sampled value: numbers as numbers, anything else (a model's name) as text. */
export function fmtValue(value) {
  return typeof value === "number" ? fmtNumber(value, 5) : value === undefined ? "—" : String(value);
}

/**
 * The sampled parameters: [{path, label, kind, options}]. kind is the distribution's name
 * (loguniform, uniform, choice, int_uniform, grid); options its listed values for choice
 * and grid, else null.
 */
export function spaceParams(sweep) {
  return Object.entries(sweep.spec?.space || {}).map(([path, dist]) => {
    const kind = Object.keys(dist || {})[0] || "";
    const options = kind === "choice" || kind === "grid" ? dist[kind] : null;
    return {path, label: path.replace(/^hyperparameters\./, ""), kind, options};
  });
}

/** A trial's value of the sweep's metric (its job's last epoch's), null before it has one. */
export function trialValue(job, sweep) {
  return job.metrics?.[sweep.metric] ?? null;
}

/** "trial 3" from a job that is a sweep's trial. */
export function trialLabel(job) {
  return `trial ${job.sweep?.trial ?? "?"}`;
}
