"""A real uvicorn server on a free loopback port, in a thread, for the tests that need HTTP on the wire."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[int]:
    """Serve ``app`` on 127.0.0.1 until the block ends; yields the port."""
    import uvicorn  # the 'service' extra; callers importorskip it first

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield port
    finally:
        srv.should_exit = True
        t.join(timeout=10)


#: a stub DOM and browser globals, enough for the search page's script to load and render under node
PAGE_STUB = """
const els = {};
globalThis.document = {getElementById: (id) => (els[id] ||= {id, innerHTML: "", textContent: "", value: "",
  hidden: true, className: "", addEventListener() {}}), querySelectorAll: () => []};
globalThis.fetch = async () => ({json: async () => ({indexes: {}})});
globalThis.location = {search: ""}; globalThis.history = {replaceState() {}};
globalThis.sessionStorage = {getItem: () => null, setItem() {}};
"""


def run_page_script(tmp_path: Any, run: str) -> Any:
    """The search page's own script run by node against :data:`PAGE_STUB`, then ``run`` (JS that
    ends by printing one JSON line): that line, parsed. Skips when node is not installed."""
    import json
    import shutil
    import subprocess

    import pytest

    from sparsearch.service.http import STATIC

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the browser test, test_web_e2e.py, covers the page too)")
    html = (STATIC / "index.html").read_text()
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    (tmp_path / "page.js").write_text(PAGE_STUB + script + run)
    out = subprocess.run([node, str(tmp_path / "page.js")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])
