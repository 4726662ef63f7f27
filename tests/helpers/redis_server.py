"""A real ``redis-server`` process for tests, on a free loopback port, without persistence."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["RedisServer"]

_READY_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1; restarts keep the same port (and URL)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (if it is not running) and wait until it answers PING."""
        if self.running:
            return
        log = self.workdir / "redis.log"
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--logfile", str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start-up: {self._log_tail(log)}")
            try:
                with redis.Redis(port=self.port, socket_timeout=1.0) as client:
                    client.ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not answer PING") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill the server (SIGKILL, like a crash) and wait for it to go."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self.resume()
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A synchronous client for assertions on what the service stored."""
        return redis.Redis(port=self.port, socket_timeout=5.0)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    @staticmethod
    def _log_tail(log: Path) -> str:
        try:
            return log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
