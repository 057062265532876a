"""The server under test: started by the bench (a child process it can read in
``/proc``) or already running at a URL (read through ``/metrics``' ``process_*``),
and the sampler that reads its usage (and the machine's) during a run."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import httpx

__all__ = ["Sampler", "ServerProbe", "Usage", "launch_server", "remote_server"]

SAMPLE_EVERY_S = 0.25

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Usage:
    """CPU seconds (user + system) and resident memory of the server at one moment."""

    __slots__ = ("cpu_s", "peak_rss_bytes", "rss_bytes")

    def __init__(self, cpu_s: float, rss_bytes: int, peak_rss_bytes: int) -> None:
        self.cpu_s = cpu_s
        self.rss_bytes = rss_bytes
        self.peak_rss_bytes = peak_rss_bytes


class ServerProbe:
    """Where the server is and how to read its resource use."""

    def __init__(self, base_url: str, pid: int | None, source: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_url = self.base_url.replace("http", "ws", 1) + "/ws"
        self.pid = pid
        self.source = source  # "/proc" or "/metrics"
        self._peak_rss = 0

    def usage(self) -> Usage:
        """Raises OSError / httpx.HTTPError when the server is gone."""
        usage = self._proc_usage() if self.pid is not None else self._metrics_usage()
        self._peak_rss = max(self._peak_rss, usage.peak_rss_bytes, usage.rss_bytes)
        usage.peak_rss_bytes = self._peak_rss
        return usage

    def _proc_usage(self) -> Usage:
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
            # Fields after the command name (which may contain spaces) start at 3.
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        rss = peak = 0
        with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        return Usage(cpu, rss, peak)

    def _metrics_usage(self) -> Usage:
        text = httpx.get(self.base_url + "/metrics", timeout=10.0).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("process_"):
                name, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        rss = int(values.get("process_resident_memory_bytes", 0))
        return Usage(values.get("process_cpu_seconds_total", 0.0), rss, rss)


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from ``/proc/stat``; (0, 0) elsewhere."""
    with contextlib.suppress(OSError, ValueError), open("/proc/stat", encoding="ascii") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return sum(ticks) - idle, sum(ticks)
    return 0, 0


class _Sample:
    __slots__ = ("at", "busy_ticks", "server_cpu_s", "total_ticks")

    def __init__(self, at: float, server_cpu_s: float, ticks: tuple[int, int]) -> None:
        self.at = at
        self.server_cpu_s = server_cpu_s
        self.busy_ticks, self.total_ticks = ticks


class Sampler:
    """Reads the server's usage (and the machine's CPU ticks) at the start instant, then
    every SAMPLE_EVERY_S: the peak RSS, and how busy both were while the generator sent."""

    def __init__(self, probe: ServerProbe, start_at: float) -> None:
        self.probe = probe
        self.start_at = start_at
        self.before: Usage | None = None
        self.latest: Usage | None = None
        self.samples: list[_Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            usage = self.probe.usage()
            self.latest = usage
            if self.before is None:
                self.before = usage
            self.samples.append(_Sample(time.monotonic(), usage.cpu_s, _machine_ticks()))

    def _run(self) -> None:
        self._stop.wait(max(0.0, self.start_at - time.monotonic()))
        self._read()
        while not self._stop.wait(SAMPLE_EVERY_S):
            self._read()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_since_start(self) -> tuple[float, Usage]:
        after = self.probe.usage()
        before = self.before if self.before is not None else after
        return after.cpu_s - before.cpu_s, after

    def busy_until(self, until: float) -> tuple[float | None, float | None]:
        """(server, machine) busy fraction from the first sample to the last one taken
        by ``until``: the server in cores (1.0 = one core), the machine as a share of
        all its cores. None without two samples in that span."""
        span = [s for s in self.samples if s.at <= until + SAMPLE_EVERY_S / 2]
        if len(span) < 2 or span[-1].at <= span[0].at:
            return None, None
        first, last = span[0], span[-1]
        server = (last.server_cpu_s - first.server_cpu_s) / (last.at - first.at)
        total = last.total_ticks - first.total_ticks
        machine = (last.busy_ticks - first.busy_ticks) / total if total > 0 else None
        return round(server, 3), None if machine is None else round(machine, 3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def launch_server(
    *, group_commit: bool = True, data_dir: str | None = None, startup_s: float = 60.0
) -> Iterator[ServerProbe]:
    """Start ``omninudge_server.bench.serve`` in a child process on a free loopback port
    (data in a fresh temporary directory unless ``data_dir``; ``DATABASE_URL``,
    ``REDIS_URL``... from this environment); stop it on exit. Raises RuntimeError
    when it does not come up."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="omninudge-bench-"))
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "omninudge_server.bench.serve",
            "--port",
            str(port),
            "--data-dir",
            data_dir,
        ]
        if not group_commit:
            command.append("--no-group-commit")
        env = dict(os.environ)
        # A throwaway server signs throwaway tokens: PostgreSQL mode requires a secret.
        env.setdefault("OMNINUDGE_JWT_SECRET", secrets.token_urlsafe(48))
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env)
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + startup_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with status {process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base_url + "/health", timeout=2.0).status_code < 500:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not answer /health in time")
                time.sleep(0.1)
            yield ServerProbe(base_url, process.pid, "/proc")
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def remote_server(url: str) -> ServerProbe:
    """A server someone else runs: resource use comes from its ``/metrics``."""
    return ServerProbe(url, None, "/metrics")
