// A sweep's trials as a table: trial, status, each sampled value, on an asha sweep the
// metric at each rung's epoch (▲: promoted from it), the metric's value and the epochs
// trained. A click on a column's header sorts by it (again: the other way); the order holds
// across refreshes. Trials without a value sort last either way.
import {JOB_STATUSES, badge, h, replace} from "../dom.js";
import {fmtMetric, fmtValue, spaceParams, trialValue} from "../sweep_format.js";

/** A column per asha rung: the trial's value there; "—" short of it, "diverged" if none. */
function rungColumns(sweep) {
  return (sweep.rungs || []).map((rung) => {
    const at = new Map(rung.trials.map((t) => [t.job_id, t]));
    return {
      key: `rung:${rung.rung}`, label: `epoch ${rung.epoch}`, num: true,
      title: `${sweep.metric} at rung ${rung.rung}'s end (epoch ${rung.epoch})`,
      get: (j) => at.get(j.id)?.value ?? null,
      cell: (j) => {
        const t = at.get(j.id);
        if (!t) return "—";
        return [t.value === null ? "diverged" : fmtMetric(sweep.metric, t.value),
          t.promoted ? h("span", {class: "promoted-mark", title: "promoted to the next rung"}, " ▲") : null];
      },
    };
  });
}

function columns(sweep) {
  const params = spaceParams(sweep).map((p) => ({
    key: `param:${p.path}`, label: p.label, title: p.path, num: p.options === null,
    get: (j) => j.sweep?.values?.[p.path],
    cell: (j) => fmtValue(j.sweep?.values?.[p.path]),
  }));
  return [
    {key: "trial", label: "trial", num: true, get: (j) => j.sweep?.trial,
     cell: (j) => h("a", {href: `#/jobs/${j.id}`}, String(j.sweep?.trial ?? "?"))},
    {key: "status", label: "status", get: (j) => JOB_STATUSES.indexOf(j.status), cell: (j) => badge(j.status)},
    ...params,
    ...rungColumns(sweep),
    {key: "value", label: sweep.metric, num: true, get: (j) => trialValue(j, sweep),
     cell: (j) => fmtMetric(sweep.metric, trialValue(j, sweep))},
    {key: "epochs", label: "epochs", num: true, get: (j) => j.progress?.epoch ?? 0,
     cell: (j) => `${j.progress?.epoch ?? 0}/${j.spec?.hyperparameters?.epochs ?? "?"}`},
  ];
}

function compare(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), "en", {numeric: true});
}

/** Sorted copy: by column `get`, `dir` 1 or -1, missing values last, then by trial number. */
function sorted(jobs, column, dir) {
  const missing = (v) => v === null || v === undefined;
  return [...jobs].sort((x, y) => {
    const a = column.get(x);
    const b = column.get(y);
    if (missing(a) || missing(b)) {
      if (!(missing(a) && missing(b))) return missing(a) ? 1 : -1;
    } else {
      const c = compare(a, b) * dir;
      if (c) return c;
    }
    return (x.sweep?.trial ?? 0) - (y.sweep?.trial ?? 0);
  });
}

/** The table inside `box`; update(sweep, trials) redraws it. */
export function trialsTable(box) {
  let sortKey = "trial";
  let dir = 1;
  let last = null;

  function draw(sweep, trials) {
    last = [sweep, trials];
    const cols = columns(sweep);
    const column = cols.find((c) => c.key === sortKey) || cols[0];
    const head = cols.map((c) => {
      const on = c.key === column.key;
      const th = h("th", {class: c.num ? "num" : null, dataset: {sort: c.key}, title: c.title,
                          "aria-sort": on ? (dir > 0 ? "ascending" : "descending") : "none"},
        h("button", {type: "button", class: "sort", onclick: () => {
          dir = on ? -dir : 1;
          sortKey = c.key;
          draw(...last);
        }}, c.label, on ? (dir > 0 ? " ▲" : " ▼") : ""));
      return th;
    });
    const rows = sorted(trials, column, dir).map((j) => h("tr", {
      class: j.id === sweep.best?.job_id ? "best" : null, dataset: {id: j.id, trial: j.sweep?.trial}},
      cols.map((c) => h("td", {class: c.num ? "num" : null, dataset: {col: c.key}}, c.cell(j)))));
    replace(box, trials.length
      ? h("table", {class: "trials-table", id: "sweep-trials", dataset: {rows: trials.length, sort: `${column.key}:${dir}`}},
          h("thead", {}, h("tr", {}, head)), h("tbody", {}, rows))
      : h("p", {class: "muted"}, "No trial yet."));
  }

  return {update: draw};
}
