"""/docs and /redoc work without internet (an air-gapped cluster): each page, and every script,
stylesheet and icon it references, comes from the API server itself with the right media
type, and nothing in them names another host. Over real HTTP, from an API process."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest


MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
               ".png": "image/png"}
# A URL with a host: scheme://host, or protocol-relative //host.
OUTSIDE = re.compile(r"""(?:[a-z][a-z0-9+.-]*:)?//[\w.-]+""", re.I)


class References(HTMLParser):
    """The URLs a page loads: script src, link href (stylesheets, icons), img src."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img") and attrs.get("src"):
            self.urls.append((tag, attrs["src"]))
        elif tag == "link" and attrs.get("href"):
            self.urls.append((f"link rel={attrs.get('rel')}", attrs["href"]))


def references(html: str) -> list[tuple[str, str]]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page, kinds", [
    ("/docs", {"script", "link rel=stylesheet", "link rel=shortcut icon"}),
    ("/redoc", {"script", "link rel=shortcut icon"}),
])
def test_the_page_and_every_asset_it_references_come_from_the_server(live_api, page, kinds):
    resp = live_api.get(page)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    found = references(html)
    assert {kind for kind, _url in found} == kinds, found
    for kind, url in found:
        assert urlsplit(url).netloc == "" and url.startswith("/"), (kind, url)
        asset = live_api.get(urljoin(page, url))
        assert asset.status_code == 200, (url, asset.status_code)
        suffix = re.search(r"\.\w+$", urlsplit(url).path)[0]
        assert asset.headers["content-type"].split(";")[0] == MEDIA_TYPES[suffix], url
        assert len(asset.content) > 0, url
        if suffix == ".css":  # what a stylesheet loads in turn: data: URLs only
            loads = re.findall(r"""url\(\s*['"]?([^'")\s]+)""", asset.text)
            assert all(u.startswith("data:") for u in loads), [u[:60] for u in loads
                                                                if not u.startswith("data:")]
            assert "@import" not in asset.text
    assert not OUTSIDE.findall(html), OUTSIDE.findall(html)


def test_swagger_ui_reads_this_servers_openapi_and_asks_no_online_validator(live_api):
    html = live_api.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html  # else a badge image from validator.swagger.io
    assert "SwaggerUIBundle" in live_api.get("/docs/assets/swagger-ui-bundle.js").text
    assert live_api.get("/openapi.json").json()["info"]["title"] == "trainhub"


def test_redoc_reads_this_servers_openapi(live_api):
    assert '<redoc spec-url="/openapi.json">' in live_api.get("/redoc").text
    assert "Redoc" in live_api.get("/docs/assets/redoc.standalone.js").text


def test_the_oauth2_redirect_page_names_no_other_host(live_api):
    resp = live_api.get("/docs/oauth2-redirect")
    assert resp.status_code == 200
    assert not references(resp.text) and not OUTSIDE.findall(resp.text)
