"""A real HAProxy in front of router replicas: health checks on ``/readyz``, L7 retries.

The configuration is what README's "Scaling out" recommends: round robin, ``/readyz`` checked
every 200 ms, and a request whose replica dies under it (refused connection, connection closed
before an answer, 502/503/504) retried on another replica (``retry-on`` + ``redispatch``).
HAProxy can only retry what it buffered, hence ``http-buffer-request``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers.processes import log_tail, stop_process

__all__ = ["HAProxy", "render_config"]


def render_config(port: int, backends: list[int], *, check_ms: int = 200) -> str:
    """HAProxy configuration: ``127.0.0.1:port`` balancing over loopback ``backends``."""
    servers = "\n".join(
        f"    server r{index} 127.0.0.1:{backend} check inter {check_ms} fall 2 rise 1"
        for index, backend in enumerate(backends)
    )
    return f"""\
global
    maxconn 1024

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout queue 10s
    retries 5
    option redispatch 1
    option http-buffer-request
    retry-on conn-failure empty-response junk-response response-timeout 502 503 504

frontend routers
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header x-lb-server %s
{servers}
"""


class HAProxy:
    """``haproxy`` in the foreground with a rendered configuration; checked before it starts."""

    def __init__(self, binary: str, workdir: Path, port: int, backends: list[int]) -> None:
        self.binary = binary
        self.port = port
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(render_config(port, backends))
        self.log = workdir / "haproxy.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HAProxy:
        check = subprocess.run(
            [self.binary, "-c", "-f", str(self.config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"invalid HAProxy configuration:\n{check.stdout}{check.stderr}")
        with self.log.open("wb") as out:
            self._process = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def log_tail(self) -> str:
        return log_tail(self.log)
