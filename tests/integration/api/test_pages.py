"""The web page's files as the app serves them: `/` and every file under api/static with
the Content-Security-Policy and the right media type, no inline code the policy would
block, every module import resolving, the vendored chart library matching its recorded
sha256, and the packaging (wheel package-data, .dockerignore) keeping the files. With
authentication on, the shell and its files need no key and hold no user data, while
`GET /session` (the page's first question) and the API answer 401 without credentials."""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import app
from api.routes.pages import CONTENT_SECURITY_POLICY
from core.config import get_settings

ROOT = Path(__file__).resolve().parents[3]
STATIC = ROOT / "api" / "static"
VENDOR = STATIC / "vendor" / "uplot-1.6.32"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
               ".svg": "image/svg+xml", ".md": "text/plain", "": "text/plain"}


@pytest.fixture(scope="module")
def client():
    # No lifespan: the page touches neither the database nor the broker.
    return TestClient(app)


@pytest.fixture
def auth_on(monkeypatch):
    """Authentication on for the app in this process (the suite runs with it off)."""
    monkeypatch.setenv("TRAINHUB_AUTH", "on")
    get_settings.cache_clear()
    assert get_settings().auth == "on"
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def static_files() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def assert_page_headers(response) -> None:
    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert set(csp["img-src"]) == {"'self'", "data:", "blob:"}
    assert csp["object-src"] == ["'none'"]
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_page_is_served_at_the_root_with_the_policy(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert_page_headers(response)
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.content == (STATIC / "index.html").read_bytes()
    assert '<script type="module" src="/static/app.js">' in response.text
    assert "/static/vendor/uplot-1.6.32/uPlot.iife.min.js" in response.text


@pytest.mark.parametrize("path", static_files(), ids=lambda p: p.relative_to(STATIC).as_posix())
def test_every_static_file_is_served_with_its_media_type_and_the_policy(client, path):
    response = client.get(f"/static/{path.relative_to(STATIC).as_posix()}")
    assert response.status_code == 200
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type == MEDIA_TYPES[path.suffix], path
    assert_page_headers(response)
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == path.read_bytes()


def test_a_static_file_revalidates_and_answers_head(client):
    first = client.get("/static/app.js")
    again = client.get("/static/app.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304
    head = client.head("/static/vendor/uplot-1.6.32/uPlot.iife.min.js")
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/javascript")
    assert int(head.headers["content-length"]) == (VENDOR / "uPlot.iife.min.js").stat().st_size


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/../pyproject.toml",
                                  "/static/%2e%2e/routes/pages.py", "/static/..%2fmain.py"])
def test_missing_files_and_escapes_are_404_in_the_api_error_shape(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "detail" in response.json()


def test_the_page_is_not_part_of_the_api_description(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


class InlineFinder(HTMLParser):
    """Collects what a `default-src 'self'` policy without 'unsafe-inline' would block."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self.in_script = False
        self.resources: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            if not attrs.get("src"):
                self.problems.append("inline <script>")
            else:
                self.resources.append(attrs["src"])
            self.in_script = True
        if tag == "link" and attrs.get("href"):
            self.resources.append(attrs["href"])
        for name in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            if value.startswith("javascript:") or re.match(r"^(https?:)?//", value):
                self.problems.append(f"<{tag} {name}={value}> (inline or another origin)")


def test_index_has_no_inline_code_and_only_local_resources(client):
    finder = InlineFinder()
    finder.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    assert finder.problems == []
    for resource in finder.resources:
        assert resource.startswith("/static/"), resource
        assert client.get(resource).status_code == 200, resource


IMPORT = re.compile(r"""^\s*import\s[^'"]*?from\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']""", re.M)


def test_every_module_import_resolves_to_a_served_file():
    modules = [p for p in static_files() if p.suffix == ".js" and "vendor" not in p.parts]
    assert {p.name for p in modules} >= {"app.js", "api.js", "chart.js", "dom.js", "job.js",
                                         "jobs.js", "compare.js", "submit.js", "predict.js",
                                         "login.js"}
    broken = []
    for module in modules:
        for match in IMPORT.finditer(module.read_text(encoding="utf-8")):
            target = match.group(1) or match.group(2)
            if not target.startswith("./") and not target.startswith("../"):
                broken.append(f"{module.name}: {target} (bare or absolute import)")
            elif not (module.parent / target).resolve().is_file():
                broken.append(f"{module.name}: {target} (no such file)")
    assert not broken, broken


def test_scripts_never_write_html_strings_or_style_attributes():
    # Text always goes in as text (no innerHTML: no markup from job names or labels), and
    # styles go through CSSOM, which the policy allows, never a style attribute.
    offenders = []
    for module in static_files():
        if module.suffix != ".js" or "vendor" in module.parts:
            continue
        for n, line in enumerate(module.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|"
                         r"setAttribute\(\s*[\"']style|\beval\(|new Function", line):
                offenders.append(f"{module.name}:{n}: {line.strip()}")
    assert not offenders, offenders


# ---- with authentication on: the shell is public and empty, the data is not -------------

def test_the_shell_needs_no_key_and_holds_no_user_data(client, auth_on):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert_page_headers(response)
    assert "set-cookie" not in response.headers
    # The file on disk, byte for byte: nothing in it depends on who asks.
    assert response.content == (STATIC / "index.html").read_bytes()
    assert "thk_" not in response.text
    # Credentials change nothing (a bad key too: the shell does not look at them).
    for headers in ({"authorization": "Bearer thk_0123456789abcdef_" + "A" * 43},
                    {"cookie": "trainhub_session=nope"}):
        again = client.get("/", headers=headers)
        assert again.status_code == 200 and again.content == response.content
        assert "set-cookie" not in again.headers


@pytest.mark.parametrize("path", [p for p in static_files() if "vendor" not in p.parts]
                         + [VENDOR / "uPlot.iife.min.js"],
                         ids=lambda p: p.relative_to(STATIC).as_posix())
def test_static_files_need_no_key_and_hold_no_user_data(client, auth_on, path):
    response = client.get(f"/static/{path.relative_to(STATIC).as_posix()}")
    assert response.status_code == 200
    assert_page_headers(response)
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "set-cookie" not in response.headers
    assert response.content == path.read_bytes()
    assert b"thk_" not in response.content


def test_who_is_logged_in_is_401_without_credentials(client, auth_on):
    for headers in ({}, {"authorization": "Basic YWxpY2U6c2VjcmV0"},
                    {"authorization": "Bearer not-a-key"}):
        response = client.get("/session", headers=headers)
        assert response.status_code == 401, headers
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]
        assert "set-cookie" not in response.headers


@pytest.mark.parametrize("path", ["/jobs", "/models", "/datasets", f"/jobs/{'0' * 32}/events"])
def test_the_pages_api_calls_are_401_without_credentials(client, auth_on, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.json()["detail"]


def test_a_malformed_key_cannot_log_in(client, auth_on):
    response = client.post("/session", json={"key": "thk_not-a-key"})
    assert response.status_code == 401
    assert "not valid" in response.json()["detail"]
    assert "set-cookie" not in response.headers


def test_with_authentication_off_the_page_is_told_so_and_gets_no_cookie(client):
    login = client.post("/session", json={"key": "anything"})
    assert login.status_code == 200
    assert login.json()["auth"] == "off" and login.json()["user"] == "local"
    assert "set-cookie" not in login.headers
    who = client.get("/session")
    assert who.status_code == 200 and who.json()["auth"] == "off"


def test_scripts_keep_no_key_and_put_none_in_a_url():
    # The session is an HttpOnly cookie: the page has no business with storage or cookies,
    # and its event streams are opened on bare paths (the cookie authenticates them).
    offenders = []
    for module in static_files():
        if module.suffix != ".js" or "vendor" in module.parts:
            continue
        for n, line in enumerate(module.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"localStorage|sessionStorage|indexedDB|document\.cookie|"
                         r"new EventSource\([^)]*\?|[?&](api_)?key=|[?&]token=", line):
                offenders.append(f"{module.name}:{n}: {line.strip()}")
    assert not offenders, offenders
    login = (STATIC / "js" / "views" / "login.js").read_text(encoding="utf-8")
    assert 'type: "password"' in login and 'autocomplete: "off"' in login
    api = (STATIC / "js" / "api.js").read_text(encoding="utf-8")
    assert 'credentials: "same-origin"' in api


def recorded_hashes() -> dict[str, str]:
    text = (VENDOR / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\|\s*([\w.\-]+)\s*\|\s*([0-9a-f]{64})\s*\|\s*$", text, re.M))


def test_the_vendored_chart_library_matches_its_recorded_sha256():
    recorded = recorded_hashes()
    assert set(recorded) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    on_disk = {p.name for p in VENDOR.iterdir() if p.is_file()} - {"README.md"}
    assert on_disk == set(recorded), "every vendored file is recorded, and only those"
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (VENDOR / "LICENSE").read_text(encoding="utf-8")
    assert "uplot@1.6.32" in (VENDOR / "README.md").read_text(encoding="utf-8")


def test_the_wheel_ships_every_static_file():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["api"]
    shipped = {Path(f).resolve() for pattern in patterns
               for f in glob.glob(str(ROOT / "api" / pattern), recursive=True)}
    missing = [p.relative_to(ROOT).as_posix() for p in static_files() if p not in shipped]
    assert not missing, f"not in package-data {patterns}: {missing}"
    extras = pyproject["project"]["optional-dependencies"]["test"]
    assert any(e.startswith("playwright") for e in extras)


def test_dockerignore_keeps_the_static_files():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    excluded = []
    for path in static_files():
        relative = path.relative_to(ROOT).as_posix()
        prefixes = [relative] + ["/".join(relative.split("/")[:i]) for i in range(1, relative.count("/") + 1)]
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            plain = pattern.lstrip("/")
            if any(fnmatch.fnmatch(p, plain) or fnmatch.fnmatch(p, plain.replace("**/", ""))
                   for p in prefixes):
                excluded.append(f"{relative} ({pattern})")
    assert not excluded, excluded
