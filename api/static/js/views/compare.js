// Several jobs' loss curves on one chart (GET /jobs/{id}/metrics?name=loss, every page),
// x = step or epoch, with a legend and a table of what differs between the jobs. Jobs
// still running are read again every few seconds.
import {datasetName, getJob, loadDatasetNames, metricPoints} from "../api.js";
import {LineChart, PALETTE, alignSeries} from "../chart.js";
import {TERMINAL, badge, fmtNumber, fmtPercent, h, replace, shortId} from "../dom.js";

const POLL_MS = 3000;
const MAX_JOBS = PALETTE.length;

export function compareView(root, params) {
  const ids = [...new Set((params.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean))].slice(0, MAX_JOBS);
  let stopped = false;
  let timer = null;
  let chart = null;
  let xMode = params.get("x") === "epoch" ? "epoch" : "step";
  const controller = new AbortController();

  if (ids.length < 1) {
    replace(root, h("section", {},
      h("h1", {}, "Compare jobs"),
      h("p", {class: "notice"}, "Tick two or more jobs in the ", h("a", {href: "#/"}, "jobs table"),
        " and press “Compare selected” to overlay their loss curves.")));
    return () => {};
  }

  // id -> {job, points: [{step, epoch, batch, value}], lastStep}
  const runs = new Map(ids.map((id) => [id, {job: null, points: [], lastStep: 0, error: null}]));

  const xSelect = h("select", {id: "compare-x", "aria-label": "x axis", onchange: () => {
    xMode = xSelect.value;
    const p = new URLSearchParams(params);
    p.set("x", xMode);
    history.replaceState(null, "", `#/compare?${p}`);
    rebuildChart();
  }}, h("option", {value: "step"}, "x: step"), h("option", {value: "epoch"}, "x: epoch"));
  xSelect.value = xMode;
  const chartBox = h("div", {class: "chart", id: "compare-chart", dataset: {points: "0"}});
  const table = h("div", {id: "compare-table"});
  const errors = h("div");

  replace(root,
    h("section", {class: "compare-view"},
      h("div", {class: "toolbar"}, h("h1", {}, `Compare ${ids.length} job${ids.length > 1 ? "s" : ""}`),
        h("span", {class: "spacer"}), xSelect, h("a", {class: "button", href: "#/"}, "Back to jobs")),
      errors,
      h("div", {class: "grid"},
        h("section", {class: "card wide"}, h("h2", {}, "Training loss"), chartBox),
        h("section", {class: "card wide"}, h("h2", {}, "Jobs"), table))));

  function label(run, id) {
    return run.job ? `${run.job.name} (${shortId(id)})` : shortId(id);
  }

  /** x of a point: the global step, or epochs as a fraction (comparable across batch sizes). */
  function xOf(run, p) {
    if (xMode === "step") return p.step;
    const epochs = run.job?.spec?.hyperparameters?.epochs;
    const total = run.job?.progress?.total_steps;
    const perEpoch = epochs && total ? total / epochs : null;
    return perEpoch ? p.epoch - 1 + p.batch / perEpoch : p.epoch;
  }

  function rebuildChart() {
    chart?.destroy();
    const series = ids.map((id, i) => ({label: label(runs.get(id), id), color: PALETTE[i]}));
    chart = new LineChart(chartBox, {series, xLabel: xMode, yLabel: "loss"});
    redraw();
  }

  function redraw() {
    if (!chart) return;
    const tables = ids.map((id) => {
      const run = runs.get(id);
      const pairs = run.points.map((p) => [xOf(run, p), p.value]).sort((a, b) => a[0] - b[0]);
      return [pairs.map((p) => p[0]), pairs.map((p) => p[1])];
    });
    const [xs, ...ys] = alignSeries(tables);
    chart.setData(xs, ys);
    renderTable();
  }

  function renderTable() {
    const jobs = ids.map((id) => runs.get(id).job).filter(Boolean);
    // Hyperparameters that differ between the jobs (all of them when there is one job).
    const keys = [...new Set(jobs.flatMap((j) => Object.keys(j.spec?.hyperparameters || {})))];
    const differing = keys.filter((k) => jobs.length < 2 || new Set(jobs.map((j) => JSON.stringify(j.spec?.hyperparameters?.[k]))).size > 1);
    replace(table, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "job"), h("th", {}, "status"), h("th", {}, "model"), h("th", {}, "dataset"),
        differing.map((k) => h("th", {}, k)), h("th", {class: "num"}, "loss points"), h("th", {class: "num"}, "last loss"), h("th", {class: "num"}, "eval acc"))),
      h("tbody", {}, ids.map((id, i) => {
        const run = runs.get(id);
        const j = run.job;
        if (!j) return h("tr", {}, h("td", {colspan: 7 + differing.length}, shortId(id), " — ", run.error || "loading…"));
        const last = run.points.length ? run.points[run.points.length - 1].value : null;
        return h("tr", {dataset: {jobId: id}},
          h("td", {}, h("span", {class: `swatch c${i}`}), " ", h("a", {href: `#/jobs/${id}`}, label(run, id))),
          h("td", {}, badge(j.status)), h("td", {}, j.model),
          h("td", {class: "dataset", title: j.dataset}, datasetName(j.dataset)),
          differing.map((k) => h("td", {}, String(j.spec?.hyperparameters?.[k]))),
          h("td", {class: "num"}, run.points.length.toLocaleString("en")),
          h("td", {class: "num"}, fmtNumber(last)),
          h("td", {class: "num"}, fmtPercent(j.metrics?.eval_accuracy)));
      })),
      differing.length || jobs.length < 2 ? null
        : h("caption", {class: "muted small"}, "Their hyperparameters are the same.")));
  }

  async function load(id) {
    const run = runs.get(id);
    try {
      run.job = await getJob(id, controller.signal);
      await loadDatasetNames([run.job.dataset]);
      const points = await metricPoints(id, "loss", run.lastStep, controller.signal);
      for (const p of points) run.points.push({step: p.step, epoch: p.epoch, batch: p.batch, value: p.value});
      if (points.length) run.lastStep = points[points.length - 1].step;
      run.error = null;
    } catch (err) {
      if (err.name === "AbortError") throw err;
      run.error = err.message;
    }
  }

  async function refresh(first) {
    const pending = ids.filter((id) => first || (runs.get(id).job && !TERMINAL.has(runs.get(id).job.status)));
    try {
      await Promise.all(pending.map(load));
    } catch (err) {
      return; // aborted: the view is gone
    }
    if (stopped) return;
    replace(errors, ids.filter((id) => runs.get(id).error).map((id) =>
      h("p", {class: "error-box"}, `${shortId(id)}: ${runs.get(id).error}`)));
    if (first) rebuildChart(); else redraw();
    if (ids.some((id) => runs.get(id).job && !TERMINAL.has(runs.get(id).job.status))) {
      timer = setTimeout(() => refresh(false), POLL_MS);
    }
  }

  refresh(true);

  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
    chart?.destroy();
  };
}
