// An asha sweep's rungs (GET /sweeps/{id}'s `rungs`) as a table: each rung's epoch, the
// trials that reached it, its cutoff, and those trials best first with their value there and
// a mark on the ones promoted to the next rung.
import {h, replace} from "../dom.js";
import {fmtMetric} from "../sweep_format.js";

function trialChip(sweep, t) {
  return h("li", {class: t.promoted ? "promoted" : null, dataset: {trial: t.trial, promoted: String(t.promoted)}},
    h("a", {href: `#/jobs/${t.job_id}`}, `trial ${t.trial}`), " ",
    h("span", {class: "value"}, t.value === null ? "diverged" : fmtMetric(sweep.metric, t.value)),
    t.promoted ? h("span", {class: "promoted-mark", title: "promoted to the next rung"}, " ▲ promoted") : null);
}

/** Draws `sweep`'s rung table into `box`. */
export function drawRungs(box, sweep) {
  const last = sweep.rungs.length - 1;
  const rows = sweep.rungs.map((rung) => h("tr", {dataset: {rung: rung.rung, epoch: rung.epoch, reached: rung.reached}},
    h("td", {class: "num"}, String(rung.rung)),
    h("td", {class: "num"}, String(rung.epoch)),
    h("td", {class: "num", dataset: {col: "reached"}}, String(rung.reached)),
    h("td", {class: "num", dataset: {col: "cutoff"},
             title: rung.rung === last ? "the last rung: no promotion from it" : "the worst of its best ⌊reached/η⌋: those it may promote"},
      rung.cutoff === null ? "—" : fmtMetric(sweep.metric, rung.cutoff)),
    h("td", {dataset: {col: "trials"}},
      rung.trials.length ? h("ol", {class: "rung-trials"}, rung.trials.map((t) => trialChip(sweep, t))) : "—")));
  replace(box, h("table", {class: "rungs-table", id: "sweep-rungs"},
    h("thead", {}, h("tr", {},
      ["rung", "epoch", "reached", "cutoff"].map((label) => h("th", {class: "num"}, label)),
      h("th", {}, `trials, best ${sweep.metric} first`))),
    h("tbody", {}, rows)));
}
