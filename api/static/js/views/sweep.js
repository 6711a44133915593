// One sweep: its summary (status, metric and mode, trial counts, the best trial, epochs
// spent against a full search's, why it waits), a Cancel button while it runs, an asha
// sweep's rung table, its trials' table and charts. Read every 2 s (GET /sweeps/{id}, GET /jobs?sweep=<id>, the new loss
// points) until the sweep has ended, then once more, then no more.
import {ApiError, cancelSweep, getSweep, sweepTrials} from "../api.js";
import {JOB_STATUSES, SWEEP_TERMINAL, TERMINAL, badge, fmtTime, h, replace} from "../dom.js";
import {fmtMetric, fmtValue, trialsDone} from "../sweep_format.js";
import {sweepCharts} from "./sweep_charts.js";
import {drawRungs} from "./sweep_rungs.js";
import {trialsTable} from "./sweep_trials.js";

const POLL_MS = 2000;

/** "asha (rungs at epochs 1, 3; η 3)", or the strategy's name. */
function strategyText(sweep) {
  const asha = sweep.spec?.asha;
  if (!asha || !sweep.rungs?.length) return sweep.strategy;
  return `${sweep.strategy} (rungs at epochs ${sweep.rungs.map((r) => r.epoch).join(", ")}; η ${asha.reduction_factor})`;
}

function summaryRows(sweep) {
  const t = sweep.trials || {};
  const best = sweep.best;
  const share = sweep.epochs_full ? ` (${Math.round((100 * sweep.epochs_spent) / sweep.epochs_full)}%)` : "";
  return [
    ["status", badge(sweep.status), "sweep-status"],
    ["metric", `${sweep.metric}, ${sweep.mode === "max" ? "higher" : "lower"} is better (${sweep.mode})`],
    ["strategy", `${strategyText(sweep)}, at most ${sweep.max_concurrent} at once, seed ${sweep.seed}`],
    ["trials", `${trialsDone(sweep)} of ${sweep.max_trials} ended, ${t.created ?? 0} made: ` +
      JOB_STATUSES.filter((c) => t[c]).map((c) => `${t[c]} ${c}`).join(", "), "sweep-counts"],
    ["best", best ? [h("a", {href: `#/jobs/${best.job_id}`}, `trial ${best.trial}`),
      `: ${fmtMetric(sweep.metric, best.value)}`, best.epoch ? ` at epoch ${best.epoch}` : "", " (",
      Object.entries(best.values || {}).map(([k, v]) => `${k} = ${fmtValue(v)}`).join(", "), ") ",
      best.checkpoint ? h("a", {href: best.checkpoint, download: `${sweep.name}-best.pt`}, "⬇ its best checkpoint") : null]
      : "—", "sweep-best"],
    ["epochs", `${sweep.epochs_spent} spent of ${sweep.epochs_full} a full search of these trials spends${share}`,
     "sweep-epochs"],
    ["created", fmtTime(sweep.created_at)],
    ["finished", fmtTime(sweep.finished_at)],
  ];
}

export function sweepView(root, sweepId) {
  let stopped = false;
  let timer = null;
  let sweep = null;
  const controller = new AbortController();
  const title = h("h1", {id: "sweep-name"}, "Sweep");
  const cancelButton = h("button", {class: "danger", id: "cancel-sweep", hidden: true, onclick: onCancel}, "Cancel");
  const live = h("span", {class: "live", id: "sweep-live"}, "loading…");
  const waiting = h("p", {class: "notice", id: "sweep-waiting", hidden: true});
  const errorBox = h("p", {class: "error-box", id: "sweep-error", hidden: true});
  const summary = h("dl", {class: "kv", id: "sweep-summary"});
  const rungsBox = h("div", {id: "sweep-rungs-box"});
  const rungsCard = h("section", {class: "card wide", hidden: true}, h("h2", {}, "Rungs"), rungsBox);
  const trialsBox = h("div", {id: "sweep-trials-box"});
  const scatterBox = h("div", {class: "grid", id: "sweep-scatter"});
  const lossBox = h("div", {class: "chart", id: "sweep-loss", dataset: {points: "0"}});
  const table = trialsTable(trialsBox);
  const charts = sweepCharts(scatterBox, lossBox, controller.signal);

  replace(root, h("section", {class: "sweep-view", dataset: {sweepId}},
    h("div", {class: "job-head"}, title, live, h("div", {class: "actions"}, cancelButton)),
    h("div", {class: "job-sub mono"}, sweepId),
    waiting, errorBox,
    h("div", {class: "grid"},
      h("section", {class: "card wide"}, h("h2", {}, "Summary"), summary),
      rungsCard,
      h("section", {class: "card wide"}, h("h2", {}, "Trials"), trialsBox),
      h("section", {class: "card wide"}, h("h2", {}, "Sampled values against the metric"), scatterBox),
      h("section", {class: "card wide"}, h("h2", {}, "Training loss of each trial"), lossBox))));

  function renderSweep() {
    title.textContent = sweep.name;
    document.title = `${sweep.name} · trainhub`;
    const running = !SWEEP_TERMINAL.has(sweep.status);
    cancelButton.hidden = !running;
    replace(summary, summaryRows(sweep).flatMap(([k, v, id]) => [h("dt", {}, k), h("dd", {id}, v)]));
    waiting.hidden = !sweep.waiting;
    waiting.textContent = sweep.waiting ? `Waiting: ${sweep.waiting}` : "";
    errorBox.hidden = !sweep.error;
    errorBox.textContent = sweep.error ? `Error: ${sweep.error}` : "";
    rungsCard.hidden = !sweep.rungs?.length;
    if (sweep.rungs?.length) drawRungs(rungsBox, sweep);
  }

  async function refresh() {
    if (stopped) return;
    let trials;
    try {
      sweep = await getSweep(sweepId, controller.signal);
      trials = await sweepTrials(sweepId, controller.signal);
      renderSweep();
      await charts.update(sweep, trials);
    } catch (err) {
      if (err.name === "AbortError" || stopped) return;
      if (!sweep) { notFound(err); return; }
      live.textContent = `could not read it (${err.message}); retrying`;
      timer = setTimeout(refresh, POLL_MS);
      return;
    }
    if (stopped) return;
    table.update(sweep, trials);
    // Ended, with every trial too (their last loss points read): nothing more will change.
    const over = SWEEP_TERMINAL.has(sweep.status) && trials.every((j) => TERMINAL.has(j.status));
    live.classList.toggle("on", !over);
    live.textContent = over ? `${sweep.status} · ${trials.length} trials` : "● live (every 2 s)";
    live.dataset.state = over ? "ended" : "live";
    if (!over) timer = setTimeout(refresh, POLL_MS);
  }

  function notFound(err) {
    replace(root, h("section", {id: "sweep-not-found"},
      h("h1", {}, "Sweep not found"),
      h("p", {class: "error-box"}, err instanceof ApiError && err.status === 404 ? `No sweep ${sweepId}.` : err.message),
      h("p", {}, h("a", {href: "#/sweeps"}, "Back to the sweeps"))));
  }

  async function onCancel() {
    if (!confirm(`Cancel ${sweep.name} and its queued and running trials?`)) return;
    cancelButton.disabled = true;
    try {
      sweep = await cancelSweep(sweepId);
      renderSweep(); // the next read (2 s at most) shows its trials cancelled
    } catch (err) {
      errorBox.hidden = false;
      errorBox.textContent = `Could not cancel: ${err.message}`;
    } finally {
      cancelButton.disabled = false;
    }
  }

  refresh();

  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
    charts.destroy();
  };
}
