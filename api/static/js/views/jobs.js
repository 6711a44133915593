// The jobs table: newest first, polled every 2 s while the tab is visible; checkboxes pick
// jobs for the compare view. Rows are updated in place, so a poll never loses a checkbox,
// the focus or a text selection.
import {api, datasetName, loadDatasetNames} from "../api.js";
import {
  JOB_STATUSES, badge, fmtAgo, fmtDuration, fmtPercent, fmtTime, h, jobDuration, progressBar,
  progressText, replace, shortId, updateProgressBar,
} from "../dom.js";
import {poller} from "../poll.js";

const POLL_MS = 2000;
const PAGE = 50;
// Kept across views: going to a job and back keeps what was ticked.
const selected = new Set();
let statusFilter = "";

/** Forget the ticked jobs and the filter (on log out: the next user starts afresh). */
export function forgetJobsSelection() {
  selected.clear();
  statusFilter = "";
}

export function jobsView(root) {
  let limit = PAGE;
  const rows = new Map(); // job id -> {tr, cells}

  const compareButton = h("button", {class: "primary", id: "compare-selected", disabled: true,
                                     onclick: () => { location.hash = `#/compare?ids=${[...selected].join(",")}`; }},
                          "Compare selected");
  const filter = h("select", {id: "status-filter", "aria-label": "status filter",
                              onchange: () => { statusFilter = filter.value; rows.clear(); replace(tbody); refresh(); }},
    ["", ...JOB_STATUSES].map(
      (s) => h("option", {value: s}, s || "all statuses")));
  filter.value = statusFilter;
  const tbody = h("tbody");
  const empty = h("p", {class: "empty", hidden: true});
  const more = h("button", {hidden: true, onclick: () => { limit += PAGE; refresh(); }}, "Show more");
  const error = h("p", {class: "error-box", hidden: true});

  replace(root,
    h("section", {class: "jobs-view"},
      h("div", {class: "toolbar"},
        h("h1", {}, "Jobs"),
        h("span", {class: "spacer"}),
        filter,
        compareButton,
        h("a", {class: "button", href: "#/new"}, "New job")),
      error,
      h("div", {class: "table-wrap"},
        h("table", {class: "jobs-table", id: "jobs-table"},
          h("thead", {}, h("tr", {},
            h("th", {class: "select"}, h("span", {class: "muted", title: "select to compare"}, "⇄")),
            h("th", {}, "Name"), h("th", {}, "Model"), h("th", {}, "Dataset"), h("th", {}, "Status"),
            h("th", {}, "Progress"), h("th", {class: "num"}, "Eval accuracy"),
            h("th", {}, "Created"), h("th", {class: "num"}, "Duration"))),
          tbody),
        empty),
      h("div", {class: "form-actions"}, more)));

  function updateCompareButton() {
    compareButton.disabled = selected.size < 2;
    compareButton.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  }

  function makeRow(job) {
    const check = h("input", {type: "checkbox", "aria-label": `select ${job.name}`, checked: selected.has(job.id),
                              onchange: () => {
                                if (check.checked) selected.add(job.id); else selected.delete(job.id);
                                updateCompareButton();
                              }});
    const cells = {
      status: h("td"),
      dataset: h("td", {class: "dataset", title: job.dataset}),
      bar: progressBar(job),
      progressText: h("div", {class: "progress-text"}),
      accuracy: h("td", {class: "num"}),
      created: h("td", {title: fmtTime(job.created_at)}),
      duration: h("td", {class: "num"}),
    };
    const tr = h("tr", {dataset: {id: job.id}},
      h("td", {class: "select"}, check),
      h("td", {class: "name"}, h("a", {href: `#/jobs/${job.id}`}, job.name), h("span", {class: "id mono"}, shortId(job.id))),
      h("td", {}, job.model),
      cells.dataset,
      cells.status,
      h("td", {class: "progress"}, cells.bar, cells.progressText),
      cells.accuracy, cells.created, cells.duration);
    return {tr, cells, status: null};
  }

  function updateRow(row, job) {
    const {cells} = row;
    if (row.status !== job.status) {
      replace(cells.status, badge(job.status));
      row.status = job.status;
    }
    cells.dataset.textContent = datasetName(job.dataset);
    updateProgressBar(cells.bar, job);
    cells.progressText.textContent = progressText(job);
    const acc = job.metrics?.val_accuracy ?? job.metrics?.eval_accuracy;
    cells.accuracy.textContent = acc === undefined ? "" : fmtPercent(acc);
    cells.created.textContent = fmtAgo(job.created_at);
    cells.duration.textContent = job.started_at ? fmtDuration(jobDuration(job)) : "";
  }

  function render(list) {
    const ids = new Set(list.jobs.map((j) => j.id));
    for (const [id, row] of rows) {
      if (!ids.has(id)) { row.tr.remove(); rows.delete(id); }
    }
    let previous = null;
    for (const job of list.jobs) {
      let row = rows.get(job.id);
      if (!row) { row = makeRow(job); rows.set(job.id, row); }
      updateRow(row, job);
      // Keep DOM order = API order (newest first) with the fewest moves.
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== row.tr) tbody.insertBefore(row.tr, expected);
      previous = row.tr;
    }
    empty.hidden = list.jobs.length > 0;
    replace(empty, statusFilter ? `No ${statusFilter} jobs.` : ["No jobs yet. ", h("a", {href: "#/new"}, "Submit one"), "."]);
    more.hidden = !list.next_cursor;
    tbody.parentElement.dataset.jobs = String(list.jobs.length);
  }

  const poll = poller(async (signal, current) => {
    try {
      const query = new URLSearchParams({limit: String(limit)});
      if (statusFilter) query.set("status", statusFilter);
      const list = await api(`/jobs?${query}`, {signal});
      await loadDatasetNames(list.jobs.map((j) => j.dataset));
      if (!current()) return; // the view ended, or a newer refresh took over
      render(list);
      error.hidden = true;
    } catch (err) {
      if (err.name === "AbortError") throw err;
      error.hidden = false;
      error.textContent = `Could not load the jobs: ${err.message}`;
    }
  }, POLL_MS);
  const refresh = poll.refresh;
  updateCompareButton();
  refresh();
  return poll.stop;
}
