"""The browser demo (``--demo``): a chat page and the JavaScript client, served from the
package's ``demo/`` folder at fixed paths.

Only the paths in :func:`demo_files` answer — a lookup in a dict built at start-up, never
a path joined onto a folder — so nothing else is reachable through them (no traversal,
no listing). The page learns the relay's WebSocket path from the one placeholder it
holds, filled in here.
"""

from __future__ import annotations

import json
from importlib.resources import files

__all__ = ["demo_files", "demo_url"]


_PLACEHOLDER = b'"__WS_PATH__"'


def demo_files(ws_path: str) -> dict[str, tuple[bytes, str]]:
    """Path -> (body, content type) of the demo, for a relay whose WebSocket path is
    ``ws_path``."""
    folder = files("trio_wsproxy").joinpath("demo")
    page = folder.joinpath("index.html").read_bytes()
    assert _PLACEHOLDER in page, "the demo page lost its placeholder"
    page = page.replace(_PLACEHOLDER, json.dumps(ws_path).encode())
    client = folder.joinpath("wsproxy.js").read_bytes()
    html = "text/html; charset=utf-8"
    return {
        "/demo": (page, html),
        "/demo/": (page, html),
        "/demo/wsproxy.js": (client, "text/javascript; charset=utf-8"),
    }


def demo_url(relay_url: str, ws_path: str) -> str:
    """The demo page's address, given the relay's ``ws[s]://HOST:PORT/PATH`` URL."""
    base = relay_url.removesuffix(ws_path)
    scheme, rest = base.split("://", 1)
    return f"{'https' if scheme == 'wss' else 'http'}://{rest}/demo/"
