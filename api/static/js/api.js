// The HTTP API, as the page uses it. Every error is an ApiError with the body's `detail`:
// a sentence, or (422) a list of {field, msg} that the forms show next to their fields.
// Requests carry the session cookie (same origin); a 401 anywhere sends the page back to
// its login form (app.js).

export class ApiError extends Error {
  constructor(status, detail) {
    const message = Array.isArray(detail)
      ? detail.map((d) => (d.field ? `${d.field}: ${d.msg}` : d.msg)).join("\n")
      : String(detail ?? "request failed");
    super(message);
    this.status = status;
    this.detail = detail;
  }

  /** 422 problems as [{field, msg}], [] for other errors. */
  get fields() {
    return Array.isArray(this.detail) ? this.detail : [];
  }
}

const listeners = new Set();
/** fn(ok: boolean) after each request: lets the page show "API unreachable". */
export function onReachability(fn) { listeners.add(fn); }
function reached(ok) { for (const fn of listeners) fn(ok); }

const unauthorizedListeners = new Set();
/** fn(detail) when a request is answered 401 (no session, or it ended): the page logs in again. */
export function onUnauthorized(fn) { unauthorizedListeners.add(fn); }
function unauthorized(detail) {
  for (const fn of unauthorizedListeners) {
    try { fn(detail); } catch (err) { console.error(err); }
  }
}

/**
 * One request to the API. Credentials are the session cookie only (HttpOnly: the page never
 * sees it, and never holds an API key). A 401 tells the onUnauthorized listeners first,
 * unless `hook` is false (the login calls handle their own 401), then throws like any error.
 */
export async function api(path, {method = "GET", json, form, signal, hook = true} = {}) {
  const init = {method, headers: {accept: "application/json"}, signal, credentials: "same-origin"};
  if (json !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // multipart: the browser sets the boundary
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    reached(false);
    throw new ApiError(0, "the API is unreachable");
  }
  reached(response.status !== 503);
  if (response.status === 204) return null;
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) {
    const error = new ApiError(response.status, body?.detail ?? `${response.status} ${response.statusText}`);
    if (response.status === 401 && hook) unauthorized(error.detail);
    throw error;
  }
  return body;
}

// ---- the web session (POST/GET/DELETE /session) ------------------------------------------
// The key typed into the login form goes once, in a JSON body, to POST /session, which
// answers with an HttpOnly SameSite=Strict cookie; the page keeps no copy of the key.

/** The caller {user, is_admin, auth: "on"|"off", expires_at}; ApiError 401 when logged out. */
export const getSession = () => api("/session", {hook: false});
/** Log in with an API key: the answer sets the session cookie. ApiError 401 for a bad key. */
export const logIn = (key) => api("/session", {method: "POST", json: {key}, hook: false});
/** End the session: the server forgets it and clears the cookie. */
export const logOut = () => api("/session", {method: "DELETE", hook: false});

/** Every point of one metric of a job after sinceStep, following next_since_step. */
export async function metricPoints(jobId, name, sinceStep = 0, signal) {
  const points = [];
  let since = sinceStep;
  for (;;) {
    const query = new URLSearchParams({since_step: String(since), limit: "10000"});
    if (name) query.set("name", name);
    const page = await api(`/jobs/${jobId}/metrics?${query}`, {signal});
    points.push(...page.metrics);
    if (page.next_since_step === null || page.next_since_step === undefined) return points;
    since = page.next_since_step;
  }
}

/** The job and dataset state machines: {job: {statuses, terminal, transitions}, dataset}. */
export const getStates = () => api("/states");
export const getJob = (id, signal) => api(`/jobs/${id}`, {signal});
export const cancelJob = (id) => api(`/jobs/${id}/cancel`, {method: "POST"});
export const deleteJob = (id) => api(`/jobs/${id}`, {method: "DELETE"});
export const listCheckpoints = (id, signal) => api(`/jobs/${id}/checkpoints`, {signal});

// ---- sweeps (issue 24): a search whose trials are jobs -----------------------------------
export const getSweep = (id, signal) => api(`/sweeps/${id}`, {signal});
export const cancelSweep = (id) => api(`/sweeps/${id}/cancel`, {method: "POST"});

/** Every trial (a job) of a sweep: GET /jobs?sweep=<id>, following next_cursor. */
export async function sweepTrials(sweepId, signal) {
  const jobs = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({sweep: sweepId, limit: "500"});
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/jobs?${query}`, {signal});
    jobs.push(...page.jobs);
    cursor = page.next_cursor;
  } while (cursor);
  return jobs;
}

// ---- dataset names -----------------------------------------------------------------------
// A job names its dataset by id. An upload's id means nothing to a person; its name does (the
// upload's file name unless the uploader named it). Names come from GET /datasets, asked
// again only when a job names an upload the page has not seen yet.
const UPLOAD_ID = /^[0-9a-f]{32}$/;
const datasetNames = new Map(); // upload id -> name (null: deleted since)
let namesAsked = null; // the GET /datasets under way, shared by the views that wait for it

/** Learn the names of these datasets; never throws (an unknown name shows as a short id). */
export async function loadDatasetNames(ids) {
  const unseen = () => ids.filter((id) => UPLOAD_ID.test(id) && !datasetNames.has(id));
  if (!unseen().length) return;
  namesAsked ??= api("/datasets").then((list) => {
    for (const d of list.datasets) if (d.source === "upload") datasetNames.set(d.id, d.name);
  }).finally(() => { namesAsked = null; });
  try {
    await namesAsked;
  } catch {
    return; // asked again next time
  }
  for (const id of unseen()) datasetNames.set(id, null); // not asked again
}

/** What a person calls a dataset: a built-in's id is its name; an upload's name, else its short id. */
export function datasetName(id) {
  return datasetNames.get(id) ?? (UPLOAD_ID.test(id) ? id.slice(0, 8) : id);
}

/** Forget the names (on log out: the next user has other uploads). */
export function forgetDatasetNames() {
  datasetNames.clear();
}
