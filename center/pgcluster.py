"""A throwaway PostgreSQL cluster (tests, `edge-center bench`): Debian's binaries, initdb + pg_ctl on a free
loopback port.

Run as a non-root user (PostgreSQL refuses root): as root, the cluster belongs to the `postgres` user that
Debian's package creates, and the test's folders are made passable (not readable) for it."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def why_not() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (Debian: postgresql, see scripts/install-system-deps.sh)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the cluster as"
    return None


class Cluster:
    def __init__(self, folder: Path, durable: bool = False):
        self.folder = folder
        self.durable = durable  # fsync on (a bench); off for tests, whose databases are thrown away
        self.data = folder / "data"
        self.port = free_port()
        self.bin = pg_bin()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, cwd="/")

    def start(self) -> Cluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in [self.folder, *self.folder.parents]:  # passable for postgres: x only, nothing listed
                mode = p.stat().st_mode
                if not mode & 0o001:
                    p.chmod(mode | 0o001)
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8")
        fsync = "on" if self.durable else "off"
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync={fsync}"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "log"),
            "-o",
            opts,
            "-w",
            "start",
        )
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        deadline = time.monotonic() + 30
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        while time.monotonic() < deadline and (self.data / "postmaster.pid").exists():
            time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)
