"""Web use: the documentation pages offline, and CORS for browser apps.

``/docs`` and ``/redoc`` are rendered by a real headless Chromium against a real uvicorn
server with every non-local request blocked (a dead proxy for every host but the loopback,
and no name resolves), as on an intranet. A page served from another origin fetches a
personal list with its key, as a web app would: the browser lets it read the answer only
when its origin is on the allow-list. Skipped, like the report's browser tests, when
``chromium`` is not on PATH.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.config import ServingSettings, env_name
from tests.serving_fixtures import APP_KEY, KEY_HEADERS, Server, free_port, keyed_settings, rules_data, write_bundle
from tests.test_report_browser import CHROMIUM_FLAGS, TIMEOUT_S, chromium

ALLOWED = "http://127.0.0.1:{port}"
OFFLINE_FLAGS = (
    "--proxy-server=http://127.0.0.1:9",  # every host but the loopback goes through a dead proxy
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # and no name resolves
    "--virtual-time-budget=15000",  # run the page's scripts (and their local fetches) to the end
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("web") / "bundle")


def dom_of(tmp: Path, url: str, profile: str) -> str:
    """The page's DOM after its scripts ran, in Chromium with the network blocked."""
    args = [chromium(), *CHROMIUM_FLAGS, *OFFLINE_FLAGS, f"--user-data-dir={tmp / profile}", "--dump-dom", url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


# ---- CORS, in process ---------------------------------------------------------------------------
def test_cors_answers_only_allowed_origins(bundle: Path, tmp_path: Path) -> None:
    app = create_app(keyed_settings(home=tmp_path / "home", model_dir=bundle,
                                    cors_origins="https://app.example.org, https://admin.example.org/"))
    with TestClient(app, headers=KEY_HEADERS) as client:
        allowed = client.get("/v1/users/u1/recommendations", headers={"Origin": "https://app.example.org"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
        assert "retry-after" in allowed.headers["access-control-expose-headers"].lower()
        other = client.get("/v1/users/u1/recommendations", headers={"Origin": "https://evil.example.com"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"}
        ok = client.options("/v1/users/u1/recommendations", headers={"Origin": "https://admin.example.org",
                                                                     **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://admin.example.org"
        assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
        refused = client.options("/v1/users/u1/recommendations", headers={"Origin": "https://evil.example.com",
                                                                          **preflight})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


def test_no_cors_headers_without_an_allow_list(bundle: Path, tmp_path: Path) -> None:
    with TestClient(create_app(keyed_settings(home=tmp_path / "home", model_dir=bundle)),
                    headers=KEY_HEADERS) as client:
        answer = client.get("/v1/items/i4/similar", headers={"Origin": "https://app.example.org"})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("origins", ["app.example.org", "https://app.example.org/path", "ftp://x.org"])
def test_a_malformed_origin_is_refused_at_start(origins: str) -> None:
    with pytest.raises(ValueError, match="not a web origin"):
        ServingSettings(cors_origins=origins)


def test_docs_pages_name_no_outside_host(bundle: Path, tmp_path: Path) -> None:
    with TestClient(create_app(keyed_settings(home=tmp_path / "home", model_dir=bundle))) as client:
        for path in ("/docs", "/redoc"):
            page = client.get(path)
            assert page.status_code == 200
            assert not re.findall(r"https?://", page.text), page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
            assert client.get(f"/docs-assets/{asset}").status_code == 200


# ---- a real browser, network blocked -----------------------------------------------------------------
@pytest.fixture(scope="module")
def web_server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int, Path]]:
    chromium()
    root = tmp_path_factory.mktemp("web-server")
    page_port = free_port()
    env = {env_name("model_dir"): str(bundle), env_name("home"): str(root / "home"),
           env_name("cors_origins"): ALLOWED.format(port=page_port), env_name("reload_interval"): "0"}
    server = Server(env, root / "server.log").start()
    try:
        yield server, page_port, root
    finally:
        server.stop()


def test_docs_render_offline_in_a_real_browser(web_server: tuple[Server, int, Path]) -> None:
    server, _, root = web_server
    swagger = dom_of(root, f"{server.base}/docs", "docs")
    assert 'class="swagger-ui' in swagger and "opblock" in swagger, swagger[-3000:]
    assert "/v1/users/{user_id}/recommendations" in swagger
    redoc = dom_of(root, f"{server.base}/redoc", "redoc")
    assert "/v1/users/{user_id}/recommendations" in redoc and "Cultural recommendation API" in redoc, redoc[-3000:]


def _page_server(directory: Path, port: int) -> ThreadingHTTPServer:
    handler = partial(SimpleHTTPRequestHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


FETCH_PAGE = """<!doctype html><html><body data-result="pending"><script>
fetch("{api}/v1/users/u1/recommendations?n=3", {{headers: {{"X-API-Key": "{key}"}}}})
  .then(r => r.json()).then(b => document.body.setAttribute("data-result", "read:" + b.items.length))
  .catch(e => document.body.setAttribute("data-result", "blocked"));
</script></body></html>"""


def test_a_browser_reads_answers_only_from_an_allowed_origin(web_server: tuple[Server, int, Path]) -> None:
    server, allowed_port, root = web_server
    site = root / "site"
    site.mkdir(exist_ok=True)
    (site / "app.html").write_text(FETCH_PAGE.format(api=server.base, key=APP_KEY), encoding="utf-8")
    results = {}
    for name, port in (("allowed", allowed_port), ("other", free_port())):
        pages = _page_server(site, port)
        try:
            dom = dom_of(root, f"http://127.0.0.1:{port}/app.html", f"cors-{name}")
        finally:
            pages.shutdown()
            pages.server_close()
        found = re.search(r'data-result="([^"]*)"', dom)
        results[name] = found.group(1) if found else dom
    assert results == {"allowed": "read:3", "other": "blocked"}
