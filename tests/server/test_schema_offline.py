"""``/schema`` works with no internet: every script, stylesheet and icon its page loads is
served by the platform itself, without a credential (issue 12: the viewer loaded from a
CDN, a blank page offline)."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx

from iiotsim.platform import Platform

ASSET = re.compile(r"<(script|link)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']", re.I)


def test_the_schema_page_loads_everything_from_the_platform(platform: Platform) -> None:
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:  # no credential
        page = http.get("/schema")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        head = page.text.split("<body", 1)[0]  # the page's own tags, not the inline spec
        assets = ASSET.findall(head)
        kinds = {tag.lower() for tag, _ in assets}
        assert kinds == {"script", "link"}, assets
        origin = urlsplit(platform.http_url)
        for _, url in assets:
            absolute = urljoin(f"{platform.http_url}/schema", url)
            assert urlsplit(absolute)[:2] == origin[:2], f"{url} is not served by the platform"
            asset = http.get(absolute)
            assert asset.status_code == 200, url
            assert asset.content, url
        scripts = [url for tag, url in assets if tag.lower() == "script"]
        assert any(url.endswith("swagger-ui-bundle.js") for url in scripts), scripts
        assert http.get("/schema/openapi.json").status_code == 200


def test_schema_assets_outside_the_package_are_not_served(platform: Platform) -> None:
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        assert http.get("/schema/assets/no-such-file.js").status_code == 404
        assert http.get("/schema/assets/%2e%2e/%2e%2e/settings.py").status_code == 404
