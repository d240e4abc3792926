"""Helpers for the ops tier: checks of deploy/ with the real tools (promtool, systemd-analyze, prometheus).

A missing tool fails the test (never a skip): install them with ``bash scripts/install-ops-tools.sh``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jodo.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "bash scripts/install-ops-tools.sh"


def find_tool(tool: str) -> str:
    """The path of ``tool``, or the test fails naming the install script."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `{INSTALL_HINT}` (Debian packages)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """``tool("promtool")`` → its path, or the test fails naming the install script."""
    return find_tool


def run(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)


# --- a real Prometheus, started and stopped by a test ------------------------------------------------
def until(what: str, check: Callable[[], object], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy and return that; fail naming ``what`` at the end."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}; last: {last!r}"
        time.sleep(every)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class Prometheus:
    """The HTTP API of a Prometheus this test started (``base``: ``http://127.0.0.1:PORT``)."""

    base: str
    log: Path

    def query(self, expr: str, at: float | None = None) -> list[Any]:
        params = {"query": expr} | ({} if at is None else {"time": f"{at:.3f}"})
        answer = get_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode(params))
        assert answer["status"] == "success", (expr, answer)
        result: list[Any] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a query that yields one series (None when it yields none)."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def series(self, expr: str, start: float, end: float, step: float = 1.0) -> list[tuple[float, float]]:
        """A range query that yields one series: its (time, value) points."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)}
        answer = get_json(f"{self.base}/api/v1/query_range?" + urllib.parse.urlencode(params))
        assert answer["status"] == "success", (expr, answer)
        result = answer["data"]["result"]
        assert len(result) <= 1, (expr, result)
        return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []

    def rules(self) -> list[dict[str, Any]]:
        groups = get_json(f"{self.base}/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


@contextmanager
def running_prometheus(
    prometheus: str,
    workdir: Path,
    target: str,
    *,
    rule_files: Sequence[Path] = (),
    scrape_seconds: int = 1,
) -> Iterator[Prometheus]:
    """Start ``prometheus`` (a path) on a free loopback port scraping ``target`` (host:port) as job
    ``jodo``, its storage under ``workdir``; wait until it is ready; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    rules = "".join(f"\n  - {path}" for path in rule_files)
    config.write_text(
        f"""
global:
  scrape_interval: {scrape_seconds}s
  evaluation_interval: {scrape_seconds}s
rule_files:{rules or " []"}
scrape_configs:
  - job_name: jodo
    static_configs:
      - targets: ["{target}"]
""",
        encoding="utf-8",
    )
    log_path = workdir / "prometheus.log"
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        api = Prometheus(base=f"http://127.0.0.1:{port}", log=log_path)
        try:

            def ready() -> bool:
                assert process.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(f"{api.base}/-/ready", timeout=1) as response:
                        return bool(response.status == 200)
                except OSError:
                    return False

            until("prometheus to be ready", ready)
            yield api
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


class _MetricsHandler(BaseHTTPRequestHandler):
    render: Callable[[], bytes]
    content_type: str

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = type(self).render()
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def serving_metrics(render: Callable[[], bytes], content_type: str) -> Iterator[str]:
    """Serve ``render()`` at ``/metrics`` on a free loopback port (a thread of this process); yields
    ``host:port``; stops the server on exit."""
    handler = type("MetricsHandler", (_MetricsHandler,), {"render": staticmethod(render),
                                                          "content_type": content_type})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
