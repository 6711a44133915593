// trainhub's web page: a single-page app on hash routes, talking to the same HTTP API as
// any client (docs/web.md). No build step: plain ES modules, uPlot vendored under vendor/.
//
//   #/                 jobs table (live), pick jobs to compare
//   #/new[?from=<id>]  submit form (optionally prefilled from a job)
//   #/jobs/<id>        one job: live loss chart, per-epoch metrics, checkpoints, predict
//   #/compare?ids=a,b  loss curves of several jobs on one chart
//   #/models           your own architectures (torch.export programs): list, upload, delete
//   #/sweeps           hyperparameter sweeps (live)
//   #/sweeps/<id>      one sweep: summary, sortable trials, value-vs-metric and loss charts
//
// Logging in: the page starts with GET /session. A 401 there, or on any request later (the
// session ended), shows the login form in place of the view; once logged in, the page reads
// the job states (GET /states, once), then shows the view the address names. The session is
// an HttpOnly cookie: the page never holds the key.
import {
  forgetDatasetNames, getSession, getStates, logOut, onReachability, onUnauthorized,
} from "./js/api.js";
import {h, learnStates, replace} from "./js/dom.js";
import {compareView} from "./js/views/compare.js";
import {jobView} from "./js/views/job.js";
import {forgetJobsSelection, jobsView} from "./js/views/jobs.js";
import {loginView} from "./js/views/login.js";
import {programsView} from "./js/views/programs.js";
import {submitView} from "./js/views/submit.js";
import {sweepView} from "./js/views/sweep.js";
import {sweepsView} from "./js/views/sweeps.js";

const view = document.getElementById("view");
const banner = document.getElementById("banner");
const nav = document.getElementById("nav");
const account = document.getElementById("account");
const accountUser = document.getElementById("account-user");
const accountAdmin = document.getElementById("account-admin");
const logOutButton = document.getElementById("log-out");
let cleanup = null;
// "starting" (asking GET /session), "login" (the form shows) or "in" (a view shows).
let mode = "starting";

function stopView() {
  if (cleanup) { try { cleanup(); } catch (err) { console.error(err); } }
  cleanup = null;
}

function route() {
  if (mode !== "in") return; // the login form stays until the login succeeds
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  stopView();
  document.title = "trainhub";
  let active = "jobs";
  if (parts[0] === "jobs" && parts[1]) {
    cleanup = jobView(view, decodeURIComponent(parts[1]));
    active = null;
  } else if (parts[0] === "new") {
    cleanup = submitView(view, params);
    active = "new";
  } else if (parts[0] === "models") {
    cleanup = programsView(view);
    active = "models";
  } else if (parts[0] === "sweeps") {
    cleanup = parts[1] ? sweepView(view, decodeURIComponent(parts[1])) : sweepsView(view);
    active = "sweeps";
  } else if (parts[0] === "compare") {
    cleanup = compareView(view, params);
    active = "compare";
  } else {
    cleanup = jobsView(view);
  }
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === active);
  window.scrollTo(0, 0);
}

/** The header: who is logged in (and `admin`), or "auth off"; nothing while logged out. */
function showCaller(caller) {
  nav.hidden = !caller;
  account.hidden = !caller;
  if (!caller) {
    accountUser.textContent = "";
    accountUser.removeAttribute("title");
    accountAdmin.hidden = true;
    logOutButton.hidden = true;
    return;
  }
  const off = caller.auth === "off";
  accountUser.textContent = off ? "auth off" : caller.user;
  accountUser.title = off
    ? "Authentication is off (TRAINHUB_AUTH=off): every caller is an admin."
    : caller.expires_at ? `logged in until ${new Date(caller.expires_at).toLocaleString()}` : "";
  accountAdmin.hidden = off || !caller.is_admin;
  logOutButton.hidden = off;
}

let statesLearnt = false;

async function loggedIn(caller) {
  if (!statesLearnt) { // the job states come from the API once (GET /states), then views show
    try {
      learnStates(await getStates());
      statesLearnt = true;
    } catch (err) {
      if (err.status === 401) showLogin();
      else showStartError(`Could not read the job states from the API: ${err.message}`);
      return;
    }
  }
  mode = "in";
  showCaller(caller);
  route();
}

/** The login form in place of the view (idempotent: many requests may be refused at once). */
function showLogin(notice = null) {
  if (mode === "login") return;
  mode = "login";
  stopView();
  showCaller(null);
  forgetJobsSelection();
  forgetDatasetNames();
  document.title = "Log in · trainhub";
  cleanup = loginView(view, {notice, onLogin: loggedIn});
}

function showStartError(message) {
  mode = "starting";
  stopView();
  replace(view, h("section", {class: "start-error"},
    h("h1", {}, "trainhub"),
    h("p", {class: "error-box"}, message),
    h("p", {}, h("button", {type: "button", onclick: start}, "Try again"))));
}

async function start() {
  mode = "starting";
  let caller;
  try {
    caller = await getSession();
  } catch (err) {
    if (err.status === 401) showLogin();
    else showStartError(`Could not ask the API who is logged in: ${err.message}`);
    return;
  }
  await loggedIn(caller);
}

logOutButton.addEventListener("click", async () => {
  logOutButton.disabled = true;
  try {
    await logOut();
  } catch (err) {
    if (err.status !== 401) { // 401: the session had ended already
      banner.hidden = false;
      banner.textContent = `Could not log out: ${err.message}`;
      logOutButton.disabled = false;
      return;
    }
  }
  logOutButton.disabled = false;
  showLogin();
});

onUnauthorized((detail) => {
  if (mode === "in") showLogin(typeof detail === "string" ? detail : "Log in again.");
});

onReachability((ok) => {
  banner.hidden = ok;
  banner.textContent = ok ? "" : "The API is unreachable or degraded; retrying…";
});

window.addEventListener("hashchange", route);
start();
