"""``omninudge serve`` / ``omninudge migrate`` as an operator runs them (subprocesses)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import unique_name

OMNINUDGE = str(Path(sys.executable).parent / "omninudge")
_OUR_VARS = ("DATABASE_URL", "REDIS_URL", "S3_", "REDDIT_", "OMNINUDGE_", "AWS_")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_VARS)}
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _serve(data_dir: Path, cwd: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [OMNINUDGE, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=cwd,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{base_url}/health", timeout=1.0)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    output = process.stdout.read().decode() if process.stdout else ""
                    raise AssertionError(f"server exited: {output}") from None
                time.sleep(0.05)
        yield base_url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_in_a_fresh_directory_then_again_reuses_the_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    username = unique_name()
    with _serve(data_dir, tmp_path) as base_url:
        health = httpx.get(f"{base_url}/health").json()
        assert health["status"] == "healthy"
        assert health["database_kind"] == "sqlite"
        first = httpx.post(f"{base_url}/api/auth/dev-login", json={"username": username}).json()
    assert (data_dir / "omninudge.db").exists()
    secret = data_dir / "jwt-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    with _serve(data_dir, tmp_path) as base_url:
        second = httpx.post(f"{base_url}/api/auth/dev-login", json={"username": username}).json()
        # The first token still works: same secret, same database.
        me = httpx.get(
            f"{base_url}/api/me", headers={"Authorization": f"Bearer {first['access_token']}"}
        )
    assert second["user"]["id"] == first["user"]["id"]
    assert me.status_code == 200


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"REDIS_URL": "http://127.0.0.1:6379/0"}, "REDIS_URL"),
        ({"S3_BUCKET": "Bad_Bucket!"}, "S3_BUCKET"),
        ({"REDDIT_CLIENT_ID": "abc"}, "REDDIT_CLIENT_ID"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1/x"}, "OMNINUDGE_JWT_SECRET"),
        ({"OMNINUDGE_JWT_SECRET": "short"}, "OMNINUDGE_JWT_SECRET"),
        ({"OMNINUDGE_DEV_LOGIN": "maybe"}, "OMNINUDGE_DEV_LOGIN"),
    ],
)
def test_a_configuration_error_is_one_line_and_exit_code_2(
    tmp_path: Path, env: dict[str, str], needle: str
) -> None:
    result = subprocess.run(
        [OMNINUDGE, "serve", "--port", str(_free_port()), "--data-dir", str(tmp_path)],
        env=_clean_env(**env),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert needle in lines[0]
    assert "Traceback" not in result.stderr.decode()


def test_an_unreachable_database_stops_serve_with_one_line(tmp_path: Path) -> None:
    env = _clean_env(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/omninudge",
        OMNINUDGE_JWT_SECRET="x" * 40,
    )
    result = subprocess.run(
        [OMNINUDGE, "serve", "--port", str(_free_port()), "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 3
    errors = [line for line in result.stderr.decode().splitlines() if "omninudge:" in line]
    assert len(errors) == 1
    assert "Traceback" not in result.stderr.decode()


def test_migrate_applies_then_reports_up_to_date(tmp_path: Path) -> None:
    def migrate() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [OMNINUDGE, "migrate", "--data-dir", str(tmp_path)],
            env=_clean_env(),
            capture_output=True,
            timeout=30,
        )

    first, second = migrate(), migrate()
    assert first.returncode == 0, first.stderr
    assert first.stdout.decode().startswith("applied migrations:")
    assert second.stdout.decode().strip() == "database is up to date"


def test_dev_login_can_be_disabled(tmp_path: Path) -> None:
    from omninudge_server.config import load_settings

    settings = load_settings({"OMNINUDGE_DEV_LOGIN": "0"}, data_dir=tmp_path)
    assert settings.dev_login is False
