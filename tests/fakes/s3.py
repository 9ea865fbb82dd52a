"""An S3-compatible store on 127.0.0.1: moto's server mode (a real HTTP S3 API, path-style
requests, any credentials) run as a subprocess of the test session.

moto[server] is a dev dependency, so `make test` has it in the virtualenv; the server is
started with that interpreter (`python -m moto.server`) on a free port, and stopped (or
stopped and started again on the same port, to play an outage) by the tests.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO, Any

from aiobotocore.session import get_session
from pydantic import SecretStr

ACCESS_KEY = "hotline-test"
SECRET_KEY = "hotline-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MotoS3:
    """moto_server on 127.0.0.1; `start()` waits until it answers."""

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (on the port it had before, if it ran already)."""
        self.port = self.port or free_port()
        # Kept open while the server runs (stop() closes it): its output, for a failure.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self._output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/", timeout=1) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("moto_server did not answer in time")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-2000:].decode(errors="replace")

    def create_bucket(self, name: str) -> None:
        """CreateBucket (PUT /{bucket}), as any S3 client sends it."""
        request = urllib.request.Request(f"{self.url}/{name}", method="PUT")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            assert answer.status == 200

    async def get_object(self, bucket: str, name: str) -> bytes | None:
        """An object's bytes by its full name in the bucket (None if there is none), read
        with an S3 client of its own."""
        async with get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ) as client:
            try:
                answer = await client.get_object(Bucket=bucket, Key=name)
            except client.exceptions.NoSuchKey:
                return None
            async with answer["Body"] as body:
                return await body.read()

    def settings(self, bucket: str, prefix: str = "photos") -> dict[str, Any]:
        """Settings values that put the media store in bucket/prefix on this server."""
        return {
            "media_url": f"s3://{bucket}/{prefix}",
            "s3_endpoint_url": self.url,
            "s3_region": REGION,
            "s3_access_key_id": SecretStr(ACCESS_KEY),
            "s3_secret_access_key": SecretStr(SECRET_KEY),
        }
