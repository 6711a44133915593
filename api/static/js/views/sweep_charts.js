// A sweep's charts: for each sampled parameter, its value against the metric (one point per
// trial with a value; a log x axis for a loguniform parameter, the listed options as the x
// axis's ticks for choice and grid), and the trials' loss curves overlaid (GET
// /jobs/{id}/metrics?name=loss, read on from the last step while a trial runs); on an asha
// sweep's, a triangle where a trial was promoted: its curve at the end of that rung's epoch.
import {metricPoints} from "../api.js";
import {LineChart, PALETTE, alignSeries} from "../chart.js";
import {TERMINAL, h, replace} from "../dom.js";
import {fmtValue, spaceParams, trialLabel, trialValue} from "../sweep_format.js";

/** A power of ten's label ("0.001"); other ticks of a log axis go unlabelled. */
function decade(v) {
  const e = Math.log10(v);
  return Math.abs(e - Math.round(e)) < 1e-9 ? String(Number(v.toPrecision(1))) : "";
}

/**
 * The x axis of a parameter: {x: value -> x, format, ticks}. Numbers are their own x; when
 * some value is no number (a model's name), each option is an index, its name the label.
 */
function xAxis(param, trials) {
  const seen = trials.map((j) => j.sweep?.values?.[param.path]).filter((v) => v !== undefined);
  const numeric = param.options ? param.options.every((v) => typeof v === "number") : true;
  if (numeric && seen.every((v) => typeof v === "number")) {
    return {x: (v) => v, format: param.kind === "loguniform" ? decade : fmtValue, ticks: null};
  }
  const names = [...(param.options || []), ...seen].map(String).filter((v, i, all) => all.indexOf(v) === i);
  return {x: (v) => names.indexOf(String(v)), format: (v) => names[v] ?? "", ticks: names.map((_, i) => i)};
}

function scatterCard(sweep, param, trials) {
  const box = h("div", {class: "chart scatter", dataset: {param: param.path, points: "0"}});
  const card = h("section", {class: "scatter-card"}, h("h3", {}, param.label,
    h("span", {class: "muted small"}, ` ${param.kind}${param.kind === "loguniform" ? " · log x" : ""}`)), box);
  const axis = xAxis(param, trials);
  const chart = new LineChart(box, {series: [{label: sweep.metric}], xLabel: param.label, yLabel: sweep.metric,
    height: 240, scatter: true, xLog: param.kind === "loguniform", xFormat: axis.format, xTicks: axis.ticks});
  return {card, chart, param, axis};
}

/** The loss at `step` on the line through a run's points (the nearest one past either end). */
function lossAt(points, step) {
  let before = null;
  let after = null;
  for (const [s, v] of points) {
    if (s <= step && (before === null || s > before[0])) before = [s, v];
    if (s >= step && (after === null || s < after[0])) after = [s, v];
  }
  if (!before || !after) return (before || after)?.[1] ?? null;
  if (after[0] === before[0]) return before[1];
  return before[1] + ((after[1] - before[1]) * (step - before[0])) / (after[0] - before[0]);
}

/**
 * A marker per promotion ([{x, y, color}]): the promoted trial's curve at the last step of
 * the rung's epoch (steps per epoch: its total_steps over its epochs), in the trial's color.
 */
function promotions(sweep, shown, runs) {
  const index = new Map(shown.map((j, i) => [j.id, i]));
  return (sweep.rungs || []).flatMap((rung) => rung.trials.filter((t) => t.promoted).map((t) => {
    const job = shown[index.get(t.job_id)];
    const epochs = job?.spec?.hyperparameters?.epochs;
    const total = job?.progress?.total_steps;
    if (!epochs || !total) return null;
    const step = (rung.epoch * total) / epochs;
    const y = lossAt(runs.get(job.id)?.points || [], step);
    return y === null ? null : {x: step, y, color: PALETTE[index.get(t.job_id) % PALETTE.length]};
  })).filter(Boolean);
}

/** The charts inside scatterBox and lossBox; update(sweep, trials) reads what is new. */
export function sweepCharts(scatterBox, lossBox, signal) {
  let scatters = null; // made once the sweep's space is known
  let lossChart = null;
  let lossIds = ""; // the trials the loss chart has a series for, in order
  const runs = new Map(); // job id -> {points: Map(step -> value), lastStep, done}

  function drawScatters(sweep, trials) {
    if (!scatters) {
      scatters = spaceParams(sweep).map((p) => scatterCard(sweep, p, trials));
      replace(scatterBox, scatters.map((s) => s.card));
    }
    for (const {chart, param, axis} of scatters) {
      const pairs = trials
        .map((j) => [j.sweep?.values?.[param.path], trialValue(j, sweep)])
        .filter(([v, y]) => v !== undefined && y !== null)
        .map(([v, y]) => [axis.x(v), y])
        .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      chart.setData(pairs.map((p) => p[0]), [pairs.map((p) => p[1])]);
    }
  }

  async function readLoss(job) {
    const run = runs.get(job.id) || {points: new Map(), lastStep: 0, done: false};
    runs.set(job.id, run);
    if (run.done || job.status === "queued") return;
    const ended = TERMINAL.has(job.status); // read after the job ended: its last points are in
    const points = await metricPoints(job.id, "loss", run.lastStep, signal);
    for (const p of points) { run.points.set(p.step, p.value); run.lastStep = Math.max(run.lastStep, p.step); }
    run.done = ended;
  }

  function drawLoss(sweep, trials) {
    const shown = [...trials].sort((a, b) => (a.sweep?.trial ?? 0) - (b.sweep?.trial ?? 0));
    const ids = shown.map((j) => j.id).join(",");
    if (ids !== lossIds) { // a new trial: a chart with one more series
      lossChart?.destroy();
      replace(lossBox);
      lossChart = shown.length ? new LineChart(lossBox, {series: shown.map((j) => ({label: trialLabel(j)})),
        xLabel: "step", yLabel: "loss", markers: sweep.rungs?.length ? "promoted" : null}) : null;
      lossIds = ids;
    }
    if (!lossChart) return;
    const tables = shown.map((j) => {
      const steps = [...runs.get(j.id).points.keys()].sort((a, b) => a - b);
      return [steps, steps.map((s) => runs.get(j.id).points.get(s))];
    });
    const [xs, ...ys] = alignSeries(tables);
    lossChart.setData(xs, ys, promotions(sweep, shown, runs));
  }

  return {
    async update(sweep, trials) {
      await Promise.all(trials.map(readLoss));
      drawScatters(sweep, trials);
      drawLoss(sweep, trials);
    },
    destroy() {
      for (const s of scatters || []) s.chart.destroy();
      lossChart?.destroy();
    },
  };
}
