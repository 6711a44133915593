"""The web page in a real headless Chromium (Playwright) against the distributed stack (API
and worker processes) with authentication on: the login form first (no data before it, a
wrong key's 401 shown under the field), log in as tenant alice, submit from the form (a 422
shown next to its field first), watch the live loss chart grow from the event stream (which
the session cookie authenticates), see `succeeded`, classify dropped digit images, cancel a
job, compare two jobs' loss curves, log out; no request URL ever holds a key, the cookie is
HttpOnly and SameSite=Strict, and tenant bob sees none of alice's jobs. With
authentication off the page shows no login at all.

Screenshots of each step go under the test's tmp dir and to /tmp/trainhub-screenshots/.
The setup installs what it needs when missing: Debian's `chromium` (apt-get, as root) and
the `playwright` Python package (the version pinned in pyproject's `test` extra); it never
downloads a browser of Playwright's own (no `playwright install`).
"""
from __future__ import annotations

import base64
import importlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tomllib
from PIL import Image

from tests.procs import REPO, wait_status
from tests.tenants import client
from worker.data import digits_split

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path("/tmp/trainhub-screenshots")
TIMEOUT_MS = 60_000
COOKIE = "trainhub_session"
# Well formed, and no key: the API answers 401 "the API key is not valid ...".
WRONG_KEY = "thk_0123456789abcdef_" + "A" * 43


# ---- what the test needs on the machine ---------------------------------------------------

def ensure_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("/usr/bin/chromium is missing and this test cannot install it (it needs "
                    "root and apt-get): install Debian's chromium package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    assert CHROMIUM.exists()


def playwright_requirement() -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]["test"]
    return next(e for e in extras if e.startswith("playwright"))


def ensure_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                               playwright_requirement()],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"pip install {playwright_requirement()} failed:\n{done.stderr[-3000:]}")
        importlib.invalidate_caches()


@pytest.fixture(scope="module")
def browser():
    ensure_chromium()
    ensure_playwright()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser):
    """A page in a fresh browser context (its own cookies), recording its problems and
    every request it makes."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.problems = []  # console errors (a CSP violation is one) and uncaught exceptions
    page.requests = []  # every request, in order
    page.responses = {}  # request -> its response's status
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: page.requests.append(r))
    page.on("response", lambda r: page.responses.__setitem__(r.request, r.status))
    return page


@pytest.fixture
def page(browser):
    page = new_page(browser)
    yield page
    page.context.close()


def only_expected_401s(page) -> None:
    """Chromium logs every refused request as a console error: the 401s of a logged-out
    page were wanted; nothing else may have gone wrong."""
    assert [p for p in page.problems if "401" not in p] == [], page.problems
    page.problems.clear()


def log_in(page, key: str) -> None:
    page.wait_for_selector("#login-form #login-key")
    page.fill("#login-key", key)
    page.click("#log-in")
    page.wait_for_selector("#jobs-table[data-jobs]")  # the jobs table, read once


def session_cookies(page) -> list[dict]:
    return [c for c in page.context.cookies() if c["name"] == COOKIE]


class Shots:
    """Numbered full-page screenshots, under tmp_path and copied to /tmp/trainhub-screenshots."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.n = page, folder, 0
        folder.mkdir(parents=True, exist_ok=True)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, SCREENSHOTS / path.name)
        return path


def digit_png(x: np.ndarray) -> bytes:
    """An 8x8 grayscale PNG holding a digits sample as the dataset's uint8 tensors hold it."""
    buf = io.BytesIO()
    Image.fromarray(np.rint(x * (255 / 16)).astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def drop_files(page, selector: str, files: list[tuple[str, bytes]]) -> None:
    """A real `drop` event on the element, its DataTransfer holding the files."""
    payload = [{"name": name, "b64": base64.b64encode(data).decode()} for name, data in files]
    transfer = page.evaluate_handle("""(files) => {
        const dt = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, {type: "image/png"}));
        }
        return dt;
    }""", payload)
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def points_drawn(page, selector: str) -> int:
    return int(page.get_attribute(selector, "data-points") or 0)


def loss_points(http: httpx.Client, job_id: str) -> int:
    count, since = 0, 0
    while True:
        page = http.get(f"/jobs/{job_id}/metrics",
                        params={"name": "loss", "since_step": since, "limit": 10000}).json()
        count += len(page["metrics"])
        if page["next_since_step"] is None:
            return count
        since = page["next_since_step"]


# ---- the walk-through ---------------------------------------------------------------------

def test_login_submit_watch_predict_cancel_compare_logout(auth_stack, browser, page, tmp_path):
    base, alice, bob = auth_stack["base"], auth_stack["alice"], auth_stack["bob"]
    http = client(base, alice)  # the test's own calls: alice's key, as a Bearer header
    shot = Shots(page, tmp_path / "screenshots")
    timings: dict[str, float] = {}
    started = time.monotonic()

    # The page and its policy: the shell needs no key.
    response = page.goto(f"{base}/")
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]

    # Before logging in: the form, and no data (no nav, no table, nobody in the header).
    page.wait_for_selector("#login-form")
    assert page.get_attribute("#login-key", "type") == "password"
    assert page.get_attribute("#login-key", "autocomplete") == "off"
    assert page.get_attribute("#login-key", "name") is None
    assert page.text_content("label[for=login-key]") == "API key"
    assert page.text_content("#log-in") == "Log in"
    assert page.is_hidden("#nav") and page.is_hidden("#account")
    assert page.locator("#jobs-table").count() == 0
    assert page.text_content("#account-user") == ""
    assert session_cookies(page) == []
    shot("login")

    # A wrong key: the 401's detail under the field, still no data.
    page.fill("#login-key", WRONG_KEY)
    page.click("#log-in")
    error = page.wait_for_selector("#login-error:not([hidden])")
    assert "not valid" in error.text_content()
    assert page.get_attribute("#login-key", "aria-invalid") == "true"
    assert page.locator("#jobs-table").count() == 0 and session_cookies(page) == []
    shot("login-wrong-key")
    only_expected_401s(page)

    # Alice logs in through the form: the view the address names (the jobs table) follows.
    log_in(page, alice)
    assert page.text_content("#account-user") == "alice"
    assert page.is_hidden("#account-admin")
    assert page.is_visible("#log-out") and page.is_visible("#nav")
    assert page.locator("#login-form").count() == 0
    # The session is a cookie the page cannot read; the key is kept nowhere.
    [cookie] = session_cookies(page)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["value"] and "thk_" not in cookie["value"]
    assert COOKIE not in page.evaluate("document.cookie")
    stored = page.evaluate("JSON.stringify([Object.entries(localStorage), "
                           "Object.entries(sessionStorage), location.href])")
    assert "thk_" not in stored and alice not in stored
    shot("jobs-table")

    # The form, built from /models and /datasets. A bad learning rate first: the API's 422
    # shows next to the field.
    page.click("#nav-new")
    page.wait_for_selector("#submit-form #f-model option[value=mlp]", state="attached")
    page.select_option("#f-model", "mlp")
    page.select_option("#f-dataset", "digits")
    page.fill("#f-name", "browser-mlp")
    page.fill("#f-hyperparameters-epochs", "3")
    page.fill("#f-hyperparameters-batch_size", "8")
    page.fill("#f-hyperparameters-lr", "0")
    page.select_option("#f-hyperparameters-optimizer", "adam")
    page.fill("#f-hyperparameters-log_every", "3")
    shot("submit-form")
    page.click("#submit-job")
    lr_error = page.wait_for_selector("#f-hyperparameters-lr-error:not([hidden])")
    assert "greater than 0" in lr_error.text_content()
    assert page.get_attribute("#f-hyperparameters-lr", "aria-invalid") == "true"
    assert page.is_hidden("#f-hyperparameters-epochs-error")
    shot("submit-form-422")
    # Chromium logs the 422 response as a console error: that one was wanted.
    assert [p for p in page.problems if "422" not in p] == []
    page.problems.clear()

    page.fill("#f-hyperparameters-lr", "0.01")
    page.click("#submit-job")
    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    assert len(job_id) == 32
    job = http.get(f"/jobs/{job_id}").json()
    assert job["name"] == "browser-mlp"
    assert {"epochs": 3, "batch_size": 8, "lr": 0.01, "optimizer": "adam",
            "log_every": 3}.items() <= job["spec"]["hyperparameters"].items()

    # The live chart: sample the points it has drawn while the job runs.
    chart = "#loss-chart"
    samples: list[tuple[float, str, int]] = []
    mid_run_shot = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = page.get_attribute("#job-status .badge", "data-status") or ""
        samples.append((time.monotonic(), status, points_drawn(page, chart)))
        if status == "running" and samples[-1][2] >= 30 and not mid_run_shot:
            mid_run_shot = True
            shot("job-running-live-chart")
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    running = [n for _, status, n in samples if status == "running" and n > 0]
    assert len(running) >= 2 and running[-1] > running[0], (
        f"the chart did not gain points while the job ran: {samples[::10]}")
    timings["submit to terminal"] = samples[-1][0] - samples[0][0]

    page.wait_for_selector("#job-status .badge[data-status=succeeded]")
    page.wait_for_selector("#checkpoints a[href$='/checkpoints/best']")
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.points) === n",
        arg=[chart, loss_points(http, job_id)])
    # 1437 training images in batches of 8: 180 mini-batches an epoch, a point every 3.
    assert points_drawn(page, chart) == loss_points(http, job_id) == 3 * 60
    # The epoch table redraws 100 ms after its last point (it batches them): wait for it.
    page.wait_for_function(
        "() => document.querySelectorAll('#epoch-metrics tbody tr').length === 3")
    assert page.text_content("#hyperparameters dd[data-key=lr]") == "0.01"
    assert page.is_hidden("#cancel-job")
    href = page.get_attribute("#checkpoints a[href$='/checkpoints/best']", "href")
    download = http.get(href)
    assert download.status_code == 200 and download.headers["x-checkpoint-sha256"]
    # The page's download link works with the session cookie alone.
    in_browser = page.context.request.get(f"{base}{href}")
    assert in_browser.status == 200
    assert in_browser.headers["x-checkpoint-sha256"] == download.headers["x-checkpoint-sha256"]
    assert httpx.get(f"{base}{href}").status_code == 401  # and not without it
    # The export button too (the best checkpoint's network as a .pt2; the server names it).
    export = page.get_attribute("#checkpoints a.export[href$='format=pt2']", "href")
    assert export == f"/jobs/{job_id}/export?checkpoint=best&format=pt2"
    exported = page.context.request.get(f"{base}{export}")
    assert exported.status == 200 and exported.headers["x-export-sha256"]
    assert exported.headers["content-disposition"].endswith('.pt2"')
    shot("job-succeeded")

    # The event stream was opened with the cookie alone: no key in its URL, none in a
    # header, and the stream was answered 200 (its points are the chart's).
    events = [r for r in page.requests if r.url.endswith(f"/jobs/{job_id}/events")]
    assert events, [r.url for r in page.requests]
    assert all(r.resource_type == "eventsource" for r in events)
    assert page.responses[events[0]] == 200
    headers = events[0].all_headers()
    assert "authorization" not in headers
    assert f"{COOKIE}=" in headers.get("cookie", "")

    # Drop two digit images: the page shows the API's own top-k answer for each.
    x_train, _, y_train, _ = digits_split()
    picks = [int(np.flatnonzero(y_train == d)[0]) for d in (0, 7)]
    images = [(f"digit-{int(y_train[i])}.png", digit_png(x_train[i])) for i in picks]
    page.fill("#predict-top-k", "3")
    drop_files(page, "#dropzone", images)
    page.wait_for_selector("#predictions .prediction >> nth=1")
    shown = [[li.get_attribute("data-label") for li in fig.query_selector_all("li")]
             for fig in page.query_selector_all("#predictions .prediction")]
    answer = http.post("/predict", data={"job_id": job_id, "top_k": "3"},
                       files=[("image", (name, data, "image/png")) for name, data in images])
    assert answer.status_code == 200
    expected = [[p["label"] for p in top] for top in answer.json()["predictions"]]
    assert shown == expected
    assert [top[0] for top in shown] == ["0", "7"]
    assert page.get_attribute("#predictions img >> nth=0", "src").startswith("blob:")
    shot("predict")

    # A second job for the comparison (through the API), and a third to cancel from its page.
    second = http.post("/jobs", json={
        "name": "browser-mlp-slow-lr", "model": "mlp", "dataset": "digits",
        "hyperparameters": {"epochs": 1, "batch_size": 8, "lr": 0.001, "optimizer": "adam",
                            "log_every": 3}}).json()
    doomed = http.post("/jobs", json={
        "name": "browser-cancel-me", "model": "mlp", "dataset": "digits",
        "hyperparameters": {"epochs": 200, "batch_size": 8, "log_every": 50}}).json()
    page.goto(f"{base}/#/jobs/{doomed['id']}")
    page.click("#cancel-job")
    page.wait_for_selector("#job-status .badge[data-status=cancelled]", timeout=120_000)
    assert page.is_visible("#delete-job")
    # Closed on the cancel's answer, not left waiting for the stream's next heartbeat.
    page.wait_for_function("() => document.querySelector('#live-state').textContent.startsWith('cancelled')")
    shot("job-cancelled")
    assert wait_status(base, second["id"], key=alice)["status"] == "succeeded"

    # Compare: tick both rows of the jobs table.
    page.goto(f"{base}/#/")
    for jid in (job_id, second["id"]):
        page.wait_for_selector(f"#jobs-table tr[data-id='{jid}'] .badge[data-status=succeeded]")
        page.check(f"#jobs-table tr[data-id='{jid}'] input[type=checkbox]")
    assert page.text_content("#compare-selected") == "Compare selected (2)"
    shot("jobs-selected")
    page.click("#compare-selected")
    page.wait_for_url("**/#/compare?ids=*")
    total = loss_points(http, job_id) + loss_points(http, second["id"])
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.points) === n",
        arg=["#compare-chart", total])
    legend = page.text_content("#compare-chart .u-legend")
    assert f"browser-mlp ({job_id[:8]})" in legend
    assert f"browser-mlp-slow-lr ({second['id'][:8]})" in legend
    shot("compare-step")
    page.select_option("#compare-x", "epoch")
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.points) === n",
        arg=["#compare-chart", total])
    shot("compare-epoch")
    assert page.problems == [], page.problems

    # The session ends under the page (here: on the server): the next poll of the jobs table
    # is refused, the login form replaces the view and says why; logging in again goes on to
    # the address the page is at by then.
    page.goto(f"{base}/#/")
    page.wait_for_selector(f"#jobs-table tr[data-id='{job_id}']")
    ended = httpx.delete(f"{base}/session", headers={"cookie": f"{COOKIE}={cookie['value']}"})
    assert ended.status_code == 204
    page.wait_for_selector("#login-form", timeout=15_000)
    assert "session has ended" in page.text_content("#login-notice")
    assert page.locator("#jobs-table").count() == 0 and page.is_hidden("#account")
    shot("session-ended")
    only_expected_401s(page)
    page.evaluate("(id) => { location.hash = `#/jobs/${id}`; }", job_id)
    page.fill("#login-key", alice)
    page.click("#log-in")
    page.wait_for_selector("#job-status .badge[data-status=succeeded]")
    assert page.text_content("#job-name") == "browser-mlp"
    [cookie] = session_cookies(page)  # a new session

    # Log out: the form again, the cookie gone, its session ended on the server too, and a
    # reload stays logged out.
    page.click("#log-out")
    page.wait_for_selector("#login-form")
    assert page.is_hidden("#account") and page.is_hidden("#nav")
    assert page.locator("#compare-chart").count() == 0
    assert session_cookies(page) == []
    gone = httpx.get(f"{base}/session", headers={"cookie": f"{COOKIE}={cookie['value']}"})
    assert gone.status_code == 401
    page.reload()
    page.wait_for_selector("#login-form")
    assert page.locator("#jobs-table, #compare-chart").count() == 0
    shot("logged-out")
    only_expected_401s(page)

    # No request the page made carried a key in its URL or an Authorization header.
    urls = [r.url for r in page.requests]
    assert len(urls) > 20
    assert not [u for u in urls if "thk_" in u or alice in u or "key=" in u.lower()], urls
    assert not [r.url for r in page.requests if "authorization" in r.headers]

    # Bob, in a browser of his own: none of alice's jobs, and her job's address is "not found".
    bob_page = new_page(browser)
    try:
        bob_page.goto(f"{base}/")
        log_in(bob_page, bob)
        assert bob_page.text_content("#account-user") == "bob"
        # Bob's own jobs only: the auth stack is shared with test_isolation, which gives
        # bob jobs of his own when it runs first.
        bobs = client(base, bob).get("/jobs", params={"limit": 500}).json()["jobs"]
        assert bob_page.get_attribute("#jobs-table", "data-jobs") == str(len(bobs))
        assert job_id not in {j["id"] for j in bobs}
        assert bob_page.locator(f"#jobs-table tr[data-id='{job_id}']").count() == 0
        assert "browser-mlp" not in bob_page.text_content("#view")
        Shots(bob_page, tmp_path / "screenshots-bob")("bob-jobs")
        bob_page.goto(f"{base}/#/jobs/{job_id}")
        bob_page.wait_for_selector("#job-not-found")
        assert bob_page.text_content("#job-not-found h1") == "Job not found"
        assert f"No job {job_id}." in bob_page.text_content("#job-not-found")
        assert "browser-mlp" not in bob_page.text_content("#view")
        assert client(base, bob).get(f"/jobs/{job_id}").status_code == 404
        # Chromium logs the 404 of alice's job and the first GET /session (401).
        assert [p for p in bob_page.problems if "401" not in p and "404" not in p] == []
        assert not [r.url for r in bob_page.requests if "thk_" in r.url]
    finally:
        bob_page.context.close()

    timings["whole walk-through"] = time.monotonic() - started
    print("timings:", {k: round(v, 1) for k, v in timings.items()})
    print("screenshots:", sorted(p.name for p in (tmp_path / "screenshots").iterdir()))


def test_with_authentication_off_there_is_no_login(stack, page):
    """TRAINHUB_AUTH=off (the `stack` fixture): the views at once, the header says so."""
    page.goto(f"{stack['base']}/")
    page.wait_for_selector("#jobs-table[data-jobs]")
    assert page.locator("#login-form").count() == 0
    assert page.text_content("#account-user") == "auth off"
    assert page.is_hidden("#log-out") and page.is_hidden("#account-admin")
    assert page.is_visible("#nav")
    assert session_cookies(page) == []
    assert page.problems == [], page.problems


def npz_bytes() -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.integers(0, 256, (48, 8, 8), dtype=np.uint8),
             y_train=np.arange(48) % 2, x_test=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8),
             y_test=np.arange(12) % 2, classes=np.array(["even", "odd"]))
    return buf.getvalue()


def test_uploads_show_by_name_and_a_new_prediction_clears_the_last(stack, page, tmp_path):
    """Jobs on an upload (named by its file, `browser-cats.npz`): the jobs table, the job page
    and the compare view say `browser-cats`, not its id, and the compare table stays inside
    its card; in the predict panel, an error replaces the last request's results."""
    base = stack["base"]
    shot = Shots(page, tmp_path / "screenshots-names")
    http = client(base, None)
    upload = http.post("/datasets", files={"file": ("browser-cats.npz", npz_bytes())})
    assert upload.status_code == 202, upload.text
    dataset_id = upload.json()["id"]
    deadline = time.monotonic() + 120
    while http.get(f"/datasets/{dataset_id}").json()["status"] == "processing":
        assert time.monotonic() < deadline, "the upload was not decoded in 120 s"
        time.sleep(0.3)
    assert http.get(f"/datasets/{dataset_id}").json()["name"] == "browser-cats"
    ids = []
    for lr in (0.01, 0.001):
        job = http.post("/jobs", json={"model": "mlp", "dataset": dataset_id,
                                       "name": f"browser-names-lr{lr}",
                                       "hyperparameters": {"epochs": 1, "batch_size": 8,
                                                           "lr": lr, "log_every": 2}})
        assert job.status_code == 201, job.text
        ids.append(job.json()["id"])
    for job_id in ids:
        assert wait_status(base, job_id)["status"] == "succeeded"

    page.goto(f"{base}/#/")
    cell = page.wait_for_selector(f"#jobs-table tr[data-id='{ids[0]}'] td.dataset")
    assert cell.text_content() == "browser-cats"
    assert cell.get_attribute("title") == dataset_id
    shot("jobs-dataset-names")

    page.goto(f"{base}/#/compare?ids={','.join(ids)}")
    page.wait_for_selector("#compare-table td.dataset")
    assert [c.text_content() for c in page.query_selector_all("#compare-table td.dataset")] == [
        "browser-cats", "browser-cats"]
    edges = page.evaluate("""() => {
        const card = document.querySelector('#compare-table').closest('.card');
        const table = document.querySelector('#compare-table table');
        return [table.getBoundingClientRect().right, card.getBoundingClientRect().right];
    }""")
    assert edges[0] <= edges[1], edges
    shot("compare-dataset-names")

    page.goto(f"{base}/#/jobs/{ids[0]}")
    page.wait_for_function(
        "() => document.querySelector('#job-dataset')?.textContent === 'browser-cats'")
    # A built-in's architecture: GET /models gives no count (its layers follow the shape).
    page.wait_for_function(
        "() => /shape/.test(document.querySelector('#job-parameters')?.textContent)")
    assert page.text_content("#job-architecture") == "mlp (built-in)"
    page.wait_for_selector("#dropzone")
    pixels = np.full((8, 8), 200, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    drop_files(page, "#dropzone", [("light.png", buf.getvalue())])
    page.wait_for_selector("#predictions .prediction")
    shot("predict-answer")
    drop_files(page, "#dropzone", [("not-an-image.png", b"these bytes are no image")])
    error = page.wait_for_selector("#predict-error:not([hidden])")
    assert "Could not classify" in error.text_content()
    assert page.locator("#predictions .prediction").count() == 0
    assert page.text_content("#predict-status") == ""
    shot("predict-error-clears-results")
    # Chromium logs the refused request (415) as a console error: that one was wanted.
    assert [p for p in page.problems if "415" not in p] == [], page.problems


def job_spec_fields(http: httpx.Client) -> tuple[set[str], set[str]]:
    """What this server's POST /jobs takes: the job spec's fields and the hyperparameters'."""
    schemas = http.get("/openapi.json").json()["components"]["schemas"]
    return set(schemas["JobSpec"]["properties"]), set(schemas["Hyperparameters"]["properties"])


def option_values(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "options => options.map((o) => o.value)")


def test_the_form_searches_the_zoo_and_the_job_page_counts_its_parameters(stack, page, tmp_path):
    """The model field searches GET /models' whole list: lenet by default with the built-in
    form and body as they were (that body held back by a stand-in answer: no job), then
    typing part of a torchvision name and a key down picks torchvision.squeezenet1_1, whose
    family, parameter count and minimum size show, with the image size, pretrained and
    freeze fields; what the form posts and the job's spec hold what was typed, and the job's
    page shows its architecture and parameter count. The job is cancelled at once (nothing
    is trained to the end). "Run again…" fills the torchvision fields from it, and sends
    none of them once lenet is chosen instead. pretrained and freeze are chosen and sent where this server's
    job spec takes them (GET /openapi.json); elsewhere they are shown and left at none."""
    base = stack["base"]
    http = client(base, None)
    shot = Shots(page, tmp_path / "screenshots-zoo")
    catalog = http.get("/models").json()["models"]
    squeezenet = next(m for m in catalog if m["name"] == "torchvision.squeezenet1_1")
    spec_fields, hyperparameter_fields = job_spec_fields(http)
    fine_tunes = "pretrained" in spec_fields and "freeze" in hyperparameter_fields

    held = []

    def hold(route):
        if route.request.method != "POST":
            route.continue_()
            return
        held.append(route.request.post_data_json)
        route.fulfill(status=422, content_type="application/json",
                      body='{"detail": [{"field": "name", "msg": "held back by the test"}]}')

    page.route("**/jobs", hold)
    page.goto(f"{base}/#/new")
    page.wait_for_selector("#submit-form #f-model option[value=lenet]", state="attached")
    assert page.input_value("#f-model") == "lenet"
    listed = option_values(page, "#f-model option")  # every model, torchvision's by family
    assert sorted(listed) == sorted(m["name"] for m in catalog) and len(listed) >= 84
    assert listed[:4] == ["lenet", "cnn", "mlp", "resnet18"]
    assert page.get_attribute("#f-model optgroup >> nth=0", "label") == "built-in"
    assert "built-in" in page.text_content("#model-facts")
    for field in ("#f-hyperparameters-image_size", "#f-pretrained", "#f-hyperparameters-freeze"):
        assert page.is_hidden(field), field
    page.select_option("#f-dataset", "digits")
    page.click("#submit-job")
    page.wait_for_selector("#f-name-error:not([hidden])")
    assert held == [{"model": "lenet", "dataset": "digits", "hyperparameters": {
        "optimizer": "sgd", "epochs": 2, "batch_size": 4, "lr": 0.001, "log_every": 2000}}]
    page.unroute("**/jobs")

    # Type-ahead: "squeeze" leaves the two SqueezeNets, the first chosen; a key down the next.
    page.locator("#f-model-search").press_sequentially("squeeze")
    assert option_values(page, "#f-model option") == ["torchvision.squeezenet1_0",
                                                      "torchvision.squeezenet1_1"]
    assert page.text_content("#f-model-count") == f"2 of {len(catalog)} models match"
    assert page.input_value("#f-model") == "torchvision.squeezenet1_0"
    page.press("#f-model-search", "ArrowDown")
    assert page.input_value("#f-model") == "torchvision.squeezenet1_1"
    facts = page.text_content("#model-facts")
    assert f"{squeezenet['parameters']:,}" in facts and "with 10 classes" in facts, facts
    assert "squeezenet" in facts and "at least 17×17" in facts, facts
    assert page.is_visible("#f-hyperparameters-image_size") and page.is_visible("#f-pretrained")
    assert page.get_attribute("#f-hyperparameters-image_size", "placeholder") == "17"
    assert page.text_content("#image-size-hint").startswith("at least 17×17; empty: 17×17")
    assert option_values(page, "#f-pretrained option") == [
        "", "DEFAULT", *squeezenet["pretrained_weights"]]
    assert page.is_hidden("#f-hyperparameters-freeze")  # random weights: nothing to freeze to
    page.select_option("#f-pretrained", "DEFAULT")
    assert page.is_visible("#f-hyperparameters-freeze")
    if fine_tunes:
        page.select_option("#f-hyperparameters-freeze", "backbone")
    else:
        page.select_option("#f-pretrained", "")
        assert page.is_hidden("#f-hyperparameters-freeze")
    for field, typed in {"image_size": "24", "epochs": "1", "batch_size": "64"}.items():
        page.fill(f"#f-hyperparameters-{field}", typed)
    page.fill("#f-name", "browser-zoo")
    shot("submit-form-zoo")
    page.click("#submit-job")
    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    try:
        posted = [r.post_data_json for r in page.requests
                  if r.method == "POST" and r.url == f"{base}/jobs"]
        hyperparameters = {"optimizer": "sgd", "epochs": 1, "batch_size": 64, "lr": 0.001,
                           "log_every": 2000, "image_size": 24}
        expected = {"model": "torchvision.squeezenet1_1", "dataset": "digits",
                    "name": "browser-zoo", "hyperparameters": hyperparameters}
        if fine_tunes:
            expected["pretrained"] = "DEFAULT"
            hyperparameters["freeze"] = "backbone"
        assert posted[-1] == expected
        spec = http.get(f"/jobs/{job_id}").json()["spec"]
        assert spec["model"] == "torchvision.squeezenet1_1"
        assert spec["hyperparameters"]["image_size"] == [24, 24]
        if fine_tunes:
            assert spec["pretrained"] == "DEFAULT"
            assert spec["hyperparameters"]["freeze"] == "backbone"

        # The job's page: its architecture and parameter count (digits: 10 classes).
        page.wait_for_function(
            "() => /with 10 classes/.test(document.querySelector('#job-parameters')?.textContent)")
        count = page.text_content("#job-parameters")
        assert count.startswith(f"{squeezenet['parameters']:,} (") and count.endswith(
            " with 10 classes"), count
        architecture = page.text_content("#job-architecture")
        assert architecture.startswith("torchvision.squeezenet1_1 (torchvision, squeezenet "
                                       "family, at least 17×17)"), architecture
        assert architecture.endswith(" · pretrained DEFAULT") == fine_tunes, architecture
        shot("job-zoo-parameters")
    finally:
        http.post(f"/jobs/{job_id}/cancel")
        wait_status(base, job_id)

    # "Run again…" fills the torchvision fields from the job; switched to a built-in, the
    # form drops what the built-in would refuse (the body held back again: no job).
    page.route("**/jobs", hold)
    page.goto(f"{base}/#/new?from={job_id}")
    page.wait_for_selector("#submit-form #f-model option[value=lenet]", state="attached")
    assert page.input_value("#f-model") == "torchvision.squeezenet1_1"
    assert page.input_value("#f-hyperparameters-image_size") == "24"
    assert page.input_value("#f-pretrained") == ("DEFAULT" if fine_tunes else "")
    assert page.is_visible("#f-hyperparameters-freeze") == fine_tunes
    page.locator("#f-model-search").press_sequentially("lenet")
    assert page.input_value("#f-model") == "lenet"
    for field in ("#f-hyperparameters-image_size", "#f-pretrained", "#f-hyperparameters-freeze"):
        assert page.is_hidden(field), field
    page.click("#submit-job")
    page.wait_for_selector("#f-name-error:not([hidden])")
    again = held[-1]
    assert len(held) == 2 and again["model"] == "lenet" and "pretrained" not in again
    assert again["hyperparameters"].get("image_size") is None
    assert again["hyperparameters"].get("freeze", "none") == "none"
    page.unroute("**/jobs")
    # Chromium logs the held-back 422 as a console error: that one was wanted.
    assert [p for p in page.problems if "422" not in p] == [], page.problems


def test_models_view_uploads_lists_offers_and_deletes_a_program(auth_stack, page, tmp_path):
    """Logged in as alice, the models view's form refuses a file that is no torch.export
    archive with the 422's message, then uploads tests/programs.py's residual pair (train
    and eval file, a name); the table lists it with its id, input shape, classes and
    parameter count; the submit form offers it first (its id as the value, its shape and
    classes in the label, no torchvision field); a 409 from DELETE (a stand-in answer: a job
    using it) is shown, then Delete removes it."""
    from tests.programs import residual_pair

    base, alice = auth_stack["base"], auth_stack["alice"]
    http = client(base, alice)
    shot = Shots(page, tmp_path / "screenshots-models")
    train, eval_ = residual_pair(tmp_path)
    started = time.monotonic()
    page.goto(f"{base}/")
    log_in(page, alice)
    only_expected_401s(page)  # GET /session before the login
    page.click("#nav-models")
    page.wait_for_selector("#programs[data-programs]")
    assert page.get_attribute("#nav-models", "class") == "active"

    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"no zip at all")
    page.set_input_files("#program-file", str(junk))
    page.click("#upload-program")
    refused = page.wait_for_selector("#upload-error:not([hidden])").text_content()
    assert refused.startswith("file: "), refused

    page.set_input_files("#program-file", str(train))
    page.set_input_files("#program-eval-file", str(eval_))
    page.fill("#program-name", "browser-residual")
    page.click("#upload-program")
    page.wait_for_selector("#programs tbody tr")
    assert page.is_hidden("#upload-error")
    mine = [m for m in http.get("/models").json()["models"] if m["source"] == "program"]
    assert [m["name"] for m in mine] == ["browser-residual"]
    program = mine[0]["program"]
    cells = page.eval_on_selector_all("#programs tbody tr td:not(:last-child)",
                                      "tds => tds.map((td) => td.textContent)")
    assert cells[:4] == ["browser-residual", program["id"],
                         "×".join(map(str, program["input_shape"])), str(program["num_classes"])]
    assert page.get_attribute("#programs td.parameters", "title") == f"{program['parameter_count']:,}"
    shot("models-view")

    page.click("#nav-new")
    page.wait_for_selector("#submit-form #f-model option[value=lenet]", state="attached")
    first = page.locator("#f-model option").first
    assert first.get_attribute("value") == program["id"]
    assert first.text_content() == (f"browser-residual · {'×'.join(map(str, program['input_shape']))}"
                                    f" · {program['num_classes']} classes")
    assert page.get_attribute("#f-model optgroup >> nth=0", "label") == "your models"
    page.select_option("#f-model", program["id"])
    assert page.text_content("#model-facts").startswith("your model · input ")
    for field in ("#f-hyperparameters-image_size", "#f-pretrained", "#f-hyperparameters-freeze"):
        assert page.is_hidden(field), field
    shot("submit-form-program")

    page.click("#nav-models")
    page.wait_for_selector("#programs tbody tr")
    page.on("dialog", lambda dialog: dialog.accept())
    busy = '{"detail": "a queued or running job uses this model"}'
    page.route(f"**/models/{program['id']}",
               lambda route: route.fulfill(status=409, content_type="application/json", body=busy))
    page.click("#programs button.delete")
    shown = page.wait_for_selector("#programs-error:not([hidden])").text_content()
    assert shown.endswith("a queued or running job uses this model"), shown
    page.unroute(f"**/models/{program['id']}")
    page.click("#programs button.delete")
    page.wait_for_selector("#programs[data-programs='0']")
    assert http.get(f"/models/{program['id']}").status_code == 404
    shot("models-deleted")
    print(f"\nmodels view: {time.monotonic() - started:.1f} s")
    # Chromium logs the refused requests (the 422, the stand-in 409) as console errors.
    assert [p for p in page.problems if "422" not in p and "409" not in p] == [], page.problems


def test_sweep_view_watches_sorts_and_charts_a_grid_and_an_asha_sweep(stack, page, tmp_path):
    """A grid sweep over three learning rates (one-epoch lenet trials on digits, one at a
    time), submitted over HTTP and opened from the Sweeps navigation entry: the view follows
    it to `succeeded` and then stops reading; its trials table has the three trials and
    sorts by the metric's column (both ways); the lr-against-accuracy scatter has a point per
    trial and the loss chart every loss point of the three, one labelled series each; the
    best trial links to its job page. Then a three-trial asha sweep (rungs at epochs 1 and
    3), made at the start so that it trains meanwhile: its rung table, rung columns, stopped
    trials and the promotion's marker on the loss chart. Real processes: the trials are jobs
    a real worker trains (and pauses, and resumes), read by the page through the real API."""
    base = stack["base"]
    http = client(base, None)
    shot = Shots(page, tmp_path / "screenshots-sweep")
    started = time.monotonic()
    made = http.post("/sweeps", json={
        "name": "browser-sweep", "strategy": "grid", "max_trials": 3, "max_concurrent": 1,
        "base": {"model": "lenet", "dataset": "digits",
                 "hyperparameters": {"epochs": 1, "batch_size": 64, "log_every": 2}},
        "space": {"hyperparameters.lr": {"grid": [0.01, 0.05, 0.1]}}})
    assert made.status_code == 201, made.text
    sweep_id = made.json()["id"]
    asha = http.post("/sweeps", json={
        "name": "browser-asha", "strategy": "asha", "max_trials": 3, "max_concurrent": 1,
        "seed": 1, "asha": {"min_epochs": 1, "reduction_factor": 3, "max_epochs": 3},
        "base": {"model": "lenet", "dataset": "digits",
                 "hyperparameters": {"batch_size": 64, "log_every": 2}},
        "space": {"hyperparameters.lr": {"loguniform": [0.005, 0.1]}}})
    assert asha.status_code == 201, asha.text

    page.goto(f"{base}/")
    page.wait_for_selector("#jobs-table[data-jobs]")
    page.click("#nav-sweeps")
    page.click(f"#sweeps-table tr[data-id='{sweep_id}'] td.name a")
    page.wait_for_selector(f".sweep-view[data-sweep-id='{sweep_id}']")
    assert page.get_attribute("#nav-sweeps", "class") == "active"
    page.wait_for_selector("#sweep-status .badge[data-status='succeeded']", timeout=600_000)
    assert page.text_content("#sweep-name") == "browser-sweep"
    page.wait_for_selector("#sweep-live[data-state='ended']")
    took = time.monotonic() - started

    sweep = http.get(f"/sweeps/{sweep_id}").json()
    trials = http.get("/jobs", params={"sweep": sweep_id}).json()["jobs"]
    assert sweep["status"] == "succeeded" and len(trials) == 3
    # Ended: the page reads the sweep no more (it polled every 2 s while it ran).
    def reads() -> int:
        return sum(f"/sweeps/{sweep_id}" in r.url for r in page.requests)

    before = reads()
    page.wait_for_timeout(4500)
    assert reads() == before

    def shown_trials() -> list[int]:
        return [int(t) for t in page.eval_on_selector_all(
            "#sweep-trials tbody tr", "trs => trs.map((tr) => tr.dataset.trial)")]

    assert page.get_attribute("#sweep-trials", "data-rows") == "3"
    assert shown_trials() == [0, 1, 2]
    lrs = page.eval_on_selector_all(
        "#sweep-trials td[data-col='param:hyperparameters.lr']", "tds => tds.map((td) => td.textContent)")
    assert lrs == ["0.01", "0.05", "0.1"]  # grid order: trial n takes the n-th value
    value = {t["sweep"]["trial"]: t["metrics"]["eval_accuracy"] for t in trials}
    assert len(set(value.values())) > 1, value  # else no order could differ from the trials'
    ascending = sorted(value, key=lambda n: (value[n], n))
    page.click("#sweep-trials th[data-sort='value'] button")
    assert shown_trials() == ascending
    assert page.get_attribute("#sweep-trials th[data-sort='value']", "aria-sort") == "ascending"
    page.click("#sweep-trials th[data-sort='value'] button")
    assert shown_trials() == sorted(value, key=lambda n: (-value[n], n))
    assert shown_trials() != [0, 1, 2] or ascending != [0, 1, 2]

    # The charts drew: a point per trial against lr, and every loss point of the three.
    scatter = "#sweep-scatter .chart[data-param='hyperparameters.lr']"
    assert points_drawn(page, scatter) == 3
    assert page.locator(f"{scatter} canvas").count() == 1
    assert points_drawn(page, "#sweep-loss") == sum(loss_points(http, t["id"]) for t in trials) > 0
    assert page.locator("#sweep-loss canvas").count() == 1
    labels = page.locator("#sweep-loss .u-legend .u-series .u-label").all_text_contents()
    assert labels[1:] == ["trial 0", "trial 1", "trial 2"], labels

    best = sweep["best"]
    assert page.get_attribute("#sweep-best a", "href") == f"#/jobs/{best['job_id']}"
    assert page.text_content("#sweep-epochs").startswith("3 spent of 3 ")
    screenshot = shot("sweep-view")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    page.click("#sweep-best a")
    page.wait_for_function(
        f"() => document.querySelector('#job-name')?.textContent === 'browser-sweep-t{best['trial']}'")
    print(f"\nsweep view: {took:.1f} s to succeed, {time.monotonic() - started:.1f} s in all")
    assert page.problems == [], page.problems
    asha_view(page, http, asha.json()["id"], shot)
    print(f"asha sweep view: {time.monotonic() - started:.1f} s in all")
    assert page.problems == [], page.problems


def asha_view(page, http, sweep_id: str, shot) -> None:
    """The asha sweep's view once it ended: rungs at epochs 1 (three trials, one promoted)
    and 3 (one), a column per rung in the trials table, the two never promoted `stopped`
    (not drawn as a failure), and a marker where the promoted trial left rung 0."""
    page.click("#nav-sweeps")
    page.click(f"#sweeps-table tr[data-id='{sweep_id}'] td.name a")
    page.wait_for_selector("#sweep-status .badge[data-status='succeeded']", timeout=120_000)
    page.wait_for_selector("#sweep-live[data-state='ended']")
    sweep = http.get(f"/sweeps/{sweep_id}").json()
    trials = http.get("/jobs", params={"sweep": sweep_id}).json()["jobs"]
    promoted = [t["trial"] for t in sweep["rungs"][0]["trials"] if t["promoted"]]
    assert len(promoted) == 1, sweep["rungs"]

    rows = page.eval_on_selector_all("#sweep-rungs tbody tr", """trs => trs.map((tr) => [
        tr.dataset.epoch, tr.dataset.reached, tr.querySelectorAll('li').length,
        [...tr.querySelectorAll("li[data-promoted='true']")].map((li) => Number(li.dataset.trial))])""")
    assert rows == [["1", "3", 3, promoted], ["3", "1", 1, []]], rows
    assert page.text_content("#sweep-rungs li[data-promoted='true'] .promoted-mark").strip() == "▲ promoted"

    heads = page.eval_on_selector_all("#sweep-trials th", "ths => ths.map((th) => th.dataset.sort)")
    assert heads[heads.index("param:hyperparameters.lr") + 1:][:2] == ["rung:0", "rung:1"], heads
    stopped = "#sweep-trials .badge[data-status='stopped']"
    assert page.locator(stopped).count() == 2
    assert page.locator("#sweep-trials .badge[data-status='succeeded']").count() == 1
    assert page.eval_on_selector(stopped, "b => getComputedStyle(b).backgroundColor") == "rgb(255, 255, 255)"
    at_last_rung = page.eval_on_selector_all(
        "#sweep-trials td[data-col='rung:1']", "tds => tds.map((td) => td.textContent)")
    assert at_last_rung.count("—") == 2, at_last_rung  # the stopped ones never got there

    # One promotion, one marker; the curves are every loss point of the three trials.
    assert page.get_attribute("#sweep-loss", "data-markers") == "1"
    assert points_drawn(page, "#sweep-loss") == sum(loss_points(http, t["id"]) for t in trials) > 0
    labels = page.locator("#sweep-loss .u-legend .u-series .u-label").all_text_contents()
    assert labels[1:] == [f"trial {n}" for n in sorted(t["sweep"]["trial"] for t in trials)] + ["promoted"]
    screenshot = shot("asha-sweep-view")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
