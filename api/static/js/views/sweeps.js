// The sweeps table (GET /sweeps, newest first): name, status, strategy, trials ended of the
// most it makes, the best value so far. Polled every 2 s while the tab is visible.
import {api} from "../api.js";
import {badge, fmtAgo, fmtTime, h, replace, shortId} from "../dom.js";
import {poller} from "../poll.js";
import {fmtMetric, trialsDone} from "../sweep_format.js";

const POLL_MS = 2000;
const PAGE = 50;
const MAX_LIMIT = 200; // GET /sweeps' largest page

/** The newest `wanted` sweeps, page after page; next_cursor: whether more are left. */
async function readSweeps(wanted, signal) {
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({limit: String(Math.min(MAX_LIMIT, wanted - items.length))});
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/sweeps?${query}`, {signal});
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < wanted);
  return {items, next_cursor: cursor};
}

export function sweepsView(root) {
  let limit = PAGE;
  const tbody = h("tbody");
  const table = h("table", {class: "jobs-table", id: "sweeps-table"},
    h("thead", {}, h("tr", {}, ["Name", "Status", "Strategy", "Metric"].map((t) => h("th", {}, t)),
      h("th", {class: "num"}, "Trials"), h("th", {class: "num"}, "Best"), h("th", {}, "Created"))),
    tbody);
  const empty = h("p", {class: "empty", hidden: true},
    "No sweeps yet: POST /sweeps starts one (see the API docs).");
  const more = h("button", {hidden: true, onclick: () => { limit += PAGE; poll.refresh(); }}, "Show more");
  const error = h("p", {class: "error-box", hidden: true});

  replace(root, h("section", {class: "sweeps-view"},
    h("div", {class: "toolbar"}, h("h1", {}, "Sweeps")),
    error,
    h("div", {class: "table-wrap"}, table, empty),
    h("div", {class: "form-actions"}, more)));

  function row(sweep) {
    const best = sweep.best;
    return h("tr", {dataset: {id: sweep.id}},
      h("td", {class: "name"}, h("a", {href: `#/sweeps/${sweep.id}`}, sweep.name),
        h("span", {class: "id mono"}, shortId(sweep.id))),
      h("td", {}, badge(sweep.status)),
      h("td", {}, sweep.strategy),
      h("td", {}, `${sweep.metric} (${sweep.mode})`),
      h("td", {class: "num trials"}, `${trialsDone(sweep)}/${sweep.max_trials}`),
      h("td", {class: "num best", title: best ? `trial ${best.trial}` : null},
        best ? fmtMetric(sweep.metric, best.value) : "—"),
      h("td", {title: fmtTime(sweep.created_at)}, fmtAgo(sweep.created_at)));
  }

  const poll = poller(async (signal, current) => {
    try {
      const list = await readSweeps(limit, signal);
      if (!current()) return;
      // Whole rows are redrawn: nothing in them holds input a poll could lose.
      replace(tbody, list.items.map(row));
      table.dataset.sweeps = String(list.items.length);
      empty.hidden = list.items.length > 0;
      more.hidden = !list.next_cursor;
      error.hidden = true;
    } catch (err) {
      if (err.name === "AbortError") throw err;
      error.hidden = false;
      error.textContent = `Could not load the sweeps: ${err.message}`;
    }
  }, POLL_MS);
  poll.refresh();
  return poll.stop;
}
