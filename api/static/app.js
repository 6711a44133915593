// trainhub's web page: a single-page app on hash routes, talking to the same HTTP API as
// any client (docs/web.md). No build step: plain ES modules, uPlot vendored under vendor/.
//
//   #/                 jobs table (live), pick jobs to compare
//   #/new[?from=<id>]  submit form (optionally prefilled from a job)
//   #/jobs/<id>        one job: live loss chart, per-epoch metrics, checkpoints, predict
//   #/compare?ids=a,b  loss curves of several jobs on one chart
import {onReachability} from "./js/api.js";
import {compareView} from "./js/views/compare.js";
import {jobView} from "./js/views/job.js";
import {jobsView} from "./js/views/jobs.js";
import {submitView} from "./js/views/submit.js";

const view = document.getElementById("view");
const banner = document.getElementById("banner");
let cleanup = null;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  if (cleanup) { try { cleanup(); } catch (err) { console.error(err); } }
  cleanup = null;
  document.title = "trainhub";
  let nav = "jobs";
  if (parts[0] === "jobs" && parts[1]) {
    cleanup = jobView(view, decodeURIComponent(parts[1]));
    nav = null;
  } else if (parts[0] === "new") {
    cleanup = submitView(view, params);
    nav = "new";
  } else if (parts[0] === "compare") {
    cleanup = compareView(view, params);
    nav = "compare";
  } else {
    cleanup = jobsView(view);
  }
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  window.scrollTo(0, 0);
}

onReachability((ok) => {
  banner.hidden = ok;
  banner.textContent = ok ? "" : "The API is unreachable or degraded; retrying…";
});

window.addEventListener("hashchange", route);
route();
