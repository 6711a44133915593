// One job: live loss chart and status through its event stream (GET /jobs/{id}/events),
// evaluation per epoch, hyperparameters, checkpoints, cancel, and (once it succeeded) an
// image drop zone that classifies images with POST /predict.
import {
  ApiError, api, cancelJob, datasetName, deleteJob, getJob, listCheckpoints, loadDatasetNames, metricPoints,
} from "../api.js";
import {LineChart, LiveSeries} from "../chart.js";
import {
  TERMINAL, badge, fmtBytes, fmtDuration, fmtNumber, fmtPercent, fmtTime, h, jobDuration,
  progressBar, progressText, replace, shortId, throttleFrame, updateProgressBar,
} from "../dom.js";
import {architectureRows, jobArchitecture} from "../models.js";
import {predictPanel} from "./predict.js";

const EPOCH_COLUMNS = [
  ["train_loss", "train loss", fmtNumber],
  ["train_accuracy", "train acc", fmtPercent],
  ["val_loss", "val loss", fmtNumber],
  ["val_accuracy", "val acc", fmtPercent],
  ["eval_loss", "eval loss", fmtNumber],
  ["eval_accuracy", "eval acc", fmtPercent],
  ["lr", "lr", fmtNumber],
  ["samples_per_second", "samples/s", (v) => (v === null || v === undefined ? "—" : Math.round(v).toLocaleString("en"))],
];
const POLL_MS = 2000;

export function jobView(root, jobId) {
  let job = null;
  let stopped = false;
  let source = null; // EventSource
  let pollTimer = null;
  let checkpointTimer = null;
  let chart = null;
  let loss = null;
  let predict = null;
  let architecture = null; // the model's GET /models entry and the dataset's class count
  const epochs = new Map(); // epoch -> {metric name: value}
  const controller = new AbortController();

  // ---- skeleton -------------------------------------------------------------------------
  const title = h("h1", {id: "job-name"}, "Job");
  const statusSlot = h("span", {id: "job-status"});
  const cancelButton = h("button", {class: "danger", id: "cancel-job", hidden: true, onclick: onCancel}, "Cancel");
  const deleteButton = h("button", {class: "danger", id: "delete-job", hidden: true, onclick: onDelete}, "Delete");
  const againLink = h("a", {class: "button", href: `#/new?from=${jobId}`}, "Run again…");
  const sub = h("div", {class: "job-sub"});
  const bar = progressBar({status: "queued", progress: {}});
  const barText = h("div", {class: "progress-text", id: "job-progress-text"});
  const errorBox = h("p", {class: "error-box", id: "job-error", hidden: true});
  const actionError = h("p", {class: "error-box", hidden: true});
  const liveLabel = h("span", {class: "live", id: "live-state"}, "");
  const chartBox = h("div", {class: "chart", id: "loss-chart", dataset: {points: "0"}});
  const chartNote = h("p", {class: "muted small", hidden: true});
  const chartEmpty = h("p", {class: "chart-empty muted", id: "loss-chart-empty"}, "Waiting for the first loss point…");
  const epochTable = h("div", {id: "epoch-metrics"}, h("p", {class: "muted"}, "No epoch has finished yet."));
  const hyper = h("dl", {class: "kv", id: "hyperparameters"});
  const details = h("dl", {class: "kv", id: "job-details"});
  const checkpointBox = h("div", {id: "checkpoints"}, h("p", {class: "muted"}, "Loading…"));
  const predictCard = h("section", {class: "card wide", id: "predict", hidden: true});

  replace(root,
    h("section", {class: "job-view", dataset: {jobId}},
      h("div", {class: "job-head"}, title, statusSlot,
        h("div", {class: "actions"}, cancelButton, deleteButton, againLink)),
      sub,
      h("div", {class: "job-progress"}, bar, barText),
      errorBox, actionError,
      h("div", {class: "grid"},
        h("section", {class: "card wide"},
          h("div", {class: "chart-head"}, h("h2", {}, "Training loss"), liveLabel),
          h("div", {class: "chart-wrap"}, chartBox, chartEmpty), chartNote),
        predictCard,
        h("section", {class: "card wide"}, h("h2", {}, "Per epoch"), epochTable),
        h("section", {class: "card"}, h("h2", {}, "Hyperparameters"), hyper),
        h("section", {class: "card"}, h("h2", {}, "Run"), details),
        h("section", {class: "card wide"}, h("h2", {}, "Checkpoints"), checkpointBox))));

  // ---- rendering ------------------------------------------------------------------------
  function renderJob() {
    title.textContent = job.name;
    document.title = `${job.name} · trainhub`;
    replace(statusSlot, badge(job.status));
    const running = !TERMINAL.has(job.status);
    cancelButton.hidden = !running;
    cancelButton.disabled = job.cancel_requested;
    cancelButton.textContent = job.cancel_requested ? "Cancelling…" : "Cancel";
    deleteButton.hidden = running;
    replace(sub, h("span", {class: "mono"}, job.id), ` · ${job.model} on `,
            h("span", {id: "job-dataset", title: job.dataset}, datasetName(job.dataset)),
            job.device ? ` · ${job.device}` : "");
    updateProgressBar(bar, job);
    barText.textContent = progressText(job);
    errorBox.hidden = !job.error;
    errorBox.textContent = job.error ? `Error: ${job.error}` : "";

    const hp = job.spec?.hyperparameters || {};
    replace(hyper, Object.entries(hp).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {dataset: {key: k}}, String(v))]),
      job.spec?.init_from ? [h("dt", {}, "init_from"),
        h("dd", {}, h("a", {href: `#/jobs/${job.spec.init_from.job_id}`}, shortId(job.spec.init_from.job_id)),
          ` (${job.spec.init_from.checkpoint})`)] : [],
      job.spec?.max_runtime_seconds ? [h("dt", {}, "max_runtime_seconds"), h("dd", {}, job.spec.max_runtime_seconds)] : []);
    const rows = [
      ["status", job.status + (job.cancel_requested && !TERMINAL.has(job.status) ? " (cancel requested)" : "")],
      ...architectureRows(job, architecture),
      ["device", job.spec?.device === "auto" && job.device ? `${job.device} (auto)` : job.device || job.spec?.device],
      ["worker", job.worker || "—"],
      ["attempts", `${job.attempts} of at most ${job.max_attempts}`],
      job.resumed_from ? ["resumed from", `epoch ${job.resumed_from.epoch}, step ${job.resumed_from.step}`] : null,
      ["created", fmtTime(job.created_at)],
      ["started", fmtTime(job.started_at)],
      ["finished", fmtTime(job.finished_at)],
      ["duration", fmtDuration(jobDuration(job))],
    ].filter(Boolean);
    replace(details, rows.flatMap(([k, v, id]) => [h("dt", {}, k), h("dd", {id}, v ?? "—")]));

    if (job.status === "succeeded" && !predict) {
      predict = predictPanel(predictCard, job);
      predictCard.hidden = false;
    }
  }

  const renderSoon = throttleFrame(() => { if (!stopped && job) renderJob(); });

  const renderEpochs = () => {
    if (!epochs.size) return;
    const present = EPOCH_COLUMNS.filter(([name]) => [...epochs.values()].some((m) => name in m));
    const bestKey = present.some(([n]) => n === "val_accuracy") ? "val_accuracy" : "eval_accuracy";
    let best = null;
    for (const [epoch, m] of epochs) if (m[bestKey] !== undefined && (best === null || m[bestKey] > epochs.get(best)[bestKey])) best = epoch;
    const sorted = [...epochs.keys()].sort((a, b) => a - b);
    replace(epochTable, h("table", {class: "epoch-table"},
      h("thead", {}, h("tr", {}, h("th", {}, "epoch"), present.map(([, label]) => h("th", {class: "num"}, label)))),
      h("tbody", {}, sorted.map((epoch) => {
        const m = epochs.get(epoch);
        return h("tr", {class: epoch === best ? "best" : null, dataset: {epoch}},
          h("td", {}, epoch === best ? `${epoch} ★` : String(epoch)),
          present.map(([name, , fmt]) => h("td", {class: "num", dataset: {metric: name}}, fmt(m[name]))));
      }))));
  };
  let epochsPending = false;
  function scheduleEpochs() {
    if (epochsPending) return;
    epochsPending = true;
    setTimeout(() => { epochsPending = false; if (!stopped) renderEpochs(); }, 100);
  }

  async function refreshCheckpoints() {
    try {
      const list = await listCheckpoints(jobId, controller.signal);
      renderCheckpoints(list);
    } catch (err) {
      if (err.name !== "AbortError") replace(checkpointBox, h("p", {class: "error-box"}, err.message));
    }
  }
  function scheduleCheckpoints() {
    clearTimeout(checkpointTimer);
    checkpointTimer = setTimeout(refreshCheckpoints, 600);
  }

  function renderCheckpoints(list) {
    if (!list.checkpoints.length) {
      replace(checkpointBox, h("p", {class: "muted"}, job && TERMINAL.has(job.status)
        ? "None: this job ended before its first epoch did."
        : "None yet: a checkpoint is written at the end of every epoch."));
      return;
    }
    const metric = list.best_metric;
    replace(checkpointBox,
      h("table", {class: "checkpoint-table"},
        h("thead", {}, h("tr", {}, h("th", {}, "epoch"), h("th", {class: "num"}, "step"),
          h("th", {class: "num"}, metric.replace("_", " ")), h("th", {class: "num"}, "size"),
          h("th", {}, "sha256"), h("th", {}, "created"), h("th", {}, ""))),
        h("tbody", {}, list.checkpoints.map((c) => h("tr", {class: c.epoch === list.best ? "best" : null},
          h("td", {}, String(c.epoch), c.epoch === list.best ? " (best)" : "", c.epoch === list.latest ? " (latest)" : ""),
          h("td", {class: "num"}, c.step.toLocaleString("en")),
          h("td", {class: "num"}, fmtPercent(c.metrics?.[metric])),
          h("td", {class: "num"}, fmtBytes(c.size_bytes)),
          h("td", {class: "mono", title: c.sha256}, c.sha256.slice(0, 12) + "…"),
          h("td", {}, fmtTime(c.created_at)),
          h("td", {}, h("a", {href: `/jobs/${jobId}/checkpoints/${c.epoch}`, download: `${job?.name || jobId}-epoch${c.epoch}.pt`}, "download")))))),
      h("div", {class: "links"},
        h("a", {class: "button", href: `/jobs/${jobId}/checkpoints/latest`, download: `${job?.name || jobId}-latest.pt`}, "⬇ latest"),
        h("a", {class: "button", href: `/jobs/${jobId}/checkpoints/best`, download: `${job?.name || jobId}-best.pt`}, "⬇ best"),
        // The export is named by the server (<job name>-epoch<N>.pt2); the first one of a
        // checkpoint takes seconds to make (docs/api.md#export-a-trained-model).
        ["pt2", "onnx"].map((format) => h("a", {class: "button export", href: `/jobs/${jobId}/export?checkpoint=best&format=${format}`,
          download: true, title: `best's network for deployment: uint8 images in, probabilities out (${format === "pt2" ? "torch.export.load" : "onnxruntime"})`},
          `⬇ export best (${format === "pt2" ? ".pt2" : "ONNX"})`))));
  }

  // ---- data -----------------------------------------------------------------------------
  function onPoint(point) {
    if (point.name === "loss") {
      loss.add(point.step, point.value);
      chartEmpty.hidden = true;
      return;
    }
    const row = epochs.get(point.epoch) || {};
    row[point.name] = point.value;
    epochs.set(point.epoch, row);
    scheduleEpochs();
    if (point.name === "eval_accuracy" || point.name === "val_accuracy") scheduleCheckpoints();
  }

  function setLive(text, on = false) {
    liveLabel.textContent = text;
    liveLabel.classList.toggle("on", on);
  }

  function onEvent(event) {
    let msg;
    try { msg = JSON.parse(event.data); } catch { return; }
    switch (msg.type) {
      case "status":
        if (msg.job) {
          job = msg.job;
          renderJob();
        } else {
          // A worker's status event names the status only: read the rest (worker, attempts).
          job = {...job, status: msg.status};
          renderJob();
          getJob(jobId, controller.signal).then((fresh) => { if (!stopped && !TERMINAL.has(job.status)) { job = fresh; renderJob(); } }).catch(() => {});
        }
        break;
      case "metric":
        onPoint(msg);
        break;
      case "progress":
        if (job) {
          const epochChanged = job.progress.epoch !== msg.epoch;
          job.progress = {epoch: msg.epoch, step: msg.step, total_steps: msg.total_steps};
          renderSoon(); // progress bar, and the duration so far
          if (epochChanged) scheduleCheckpoints();
        }
        break;
      case "end":
        finish(msg.job || {...job, status: msg.status});
        break;
      default:
        break;
    }
  }

  /** The job has ended: stop listening (so the browser does not reconnect), show it all. */
  function finish(final) {
    source?.close();
    source = null;
    clearTimeout(pollTimer);
    job = final;
    renderJob();
    setLive(`${job.status} · ${loss.size} loss points`);
    chartEmpty.hidden = loss.size > 0;
    chartEmpty.textContent = "This job wrote no loss point.";
    refreshCheckpoints();
  }

  function connect() {
    source = new EventSource(`/jobs/${jobId}/events`);
    source.onopen = () => setLive("● live", true);
    source.onmessage = onEvent;
    source.onerror = () => {
      if (stopped || !source) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (an error status or another media type): the browser gives up; poll.
        source = null;
        setLive("polling");
        poll();
      } else {
        setLive("reconnecting…"); // the browser retries with Last-Event-ID
      }
    };
  }

  // Used only when the event stream cannot be opened: the job and its points every 2 s.
  let lastStep = 0;
  async function poll() {
    if (stopped) return;
    try {
      job = await getJob(jobId, controller.signal);
      renderJob();
      const points = await metricPoints(jobId, null, lastStep, controller.signal);
      for (const p of points) { onPoint(p); lastStep = Math.max(lastStep, p.step); }
      if (TERMINAL.has(job.status)) {
        // Epoch metrics share a step with the last loss point: read them all once more.
        for (const p of await metricPoints(jobId, null, 0, controller.signal)) if (p.name !== "loss") onPoint(p);
        finish(job);
        return;
      }
    } catch (err) {
      if (err.name === "AbortError") return;
    }
    pollTimer = setTimeout(poll, POLL_MS);
  }

  async function onCancel() {
    cancelButton.disabled = true;
    actionError.hidden = true;
    try {
      job = await cancelJob(jobId);
      // A queued job is cancelled at once; a running one when its loop next checks (the
      // stream then ends by itself).
      if (TERMINAL.has(job.status)) finish(job); else renderJob();
    } catch (err) {
      actionError.hidden = false;
      actionError.textContent = `Could not cancel: ${err.message}`;
      cancelButton.disabled = false;
    }
  }

  async function onDelete() {
    if (!confirm(`Delete ${job.name} with its metrics and checkpoints?`)) return;
    try {
      await deleteJob(jobId);
      location.hash = "#/";
    } catch (err) {
      actionError.hidden = false;
      actionError.textContent = `Could not delete: ${err.message}`;
    }
  }

  // ---- start ----------------------------------------------------------------------------
  (async () => {
    try {
      job = await getJob(jobId, controller.signal);
    } catch (err) {
      // Aborted, or refused (401) and the login form has replaced the view.
      if (err.name === "AbortError" || stopped) return;
      replace(root, h("section", {id: "job-not-found"},
        h("h1", {}, "Job not found"),
        h("p", {class: "error-box"}, err instanceof ApiError && err.status === 404 ? `No job ${jobId}.` : err.message),
        h("p", {}, h("a", {href: "#/"}, "Back to the jobs"))));
      return;
    }
    if (stopped) return;
    renderJob();
    loadDatasetNames([job.dataset]).then(renderSoon);
    jobArchitecture(job, controller.signal).then((found) => { architecture = found; renderSoon(); }, (err) => {
      if (err.name !== "AbortError") { architecture = {error: err.message}; renderSoon(); }
    });
    chart = new LineChart(chartBox, {series: [{label: "loss"}], xLabel: "step", yLabel: "loss"});
    loss = new LiveSeries(chart);
    chartNote.hidden = false;
    chartNote.textContent = `A point every ${job.spec?.hyperparameters?.log_every ?? "?"} mini-batches (mean loss over them); step = mini-batches so far.`;
    setLive("connecting…");
    connect();
    refreshCheckpoints();
  })();

  return () => {
    stopped = true;
    source?.close();
    clearTimeout(pollTimer);
    clearTimeout(checkpointTimer);
    controller.abort();
    chart?.destroy();
    predict?.destroy();
  };
}
