"""A real Mosquitto broker for the tests: the shipped config and ACL, TLS with a CA made now, passwords."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SHIPPED = REPO / "configs" / "mosquitto"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a broker certificate for 127.0.0.1; returns (ca.crt, broker.crt, broker.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("edge test CA"))
        .issuer_name(_name("edge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "broker.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, folder / "broker.key")
    return folder / "ca.crt", folder / "broker.crt", folder / "broker.key"


# Debian's /etc/mosquitto/mosquitto.conf, with the test's own paths: the shipped file goes in its conf.d/ as on a
# real center, so a line there that clashes with Debian's (a second persistence_location) fails here too.
DEBIAN_MAIN = """pid_file {folder}/mosquitto.pid
persistence true
persistence_location {folder}/data/
log_dest file {folder}/mosquitto.log
include_dir {folder}/conf.d
"""


def shipped_config(paths: dict[str, str]) -> str:
    """configs/mosquitto/mosquitto.conf with only the first value of the options in `paths` replaced.

    Every option in `paths` must occur exactly once, and every other line is kept byte for byte: the broker the
    tests start is the shipped one, and a broken shipped line breaks the tests."""
    lines = (SHIPPED / "mosquitto.conf").read_text().splitlines()
    seen: dict[str, int] = dict.fromkeys(paths, 0)
    out = []
    for line in lines:
        m = re.match(r"(\S+)(\s+)(\S+)(.*)", line)
        if m and m[1] in paths:
            seen[m[1]] += 1
            line = m[1] + m[2] + paths[m[1]] + m[4]  # the first value only: whatever follows it stays
        out.append(line)
    wrong = {option: n for option, n in seen.items() if n != 1}
    if wrong:
        raise ValueError(f"configs/mosquitto/mosquitto.conf: expected each of these options once, got {wrong}")
    return "\n".join(out) + "\n"


class Broker:
    """Mosquitto on a free loopback port, from the shipped mosquitto.conf and acl: only the paths of the password
    file, ACL, certificates and persistence, and the listener's port, are the test's own."""

    def __init__(self, folder: Path, users: dict[str, str]):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ca, crt, key = make_ca(folder)
        passwd = folder / "passwd"
        passwd.write_text("")
        for user, pw in users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
        passwd.chmod(0o600)
        acl = folder / "acl"
        shutil.copy(SHIPPED / "acl", acl)
        acl.chmod(0o600)
        (folder / "data").mkdir(exist_ok=True)
        (folder / "conf.d").mkdir(exist_ok=True)
        self.shipped = folder / "conf.d" / "edge.conf"
        self.shipped.write_text(
            shipped_config(
                {
                    "password_file": str(passwd),
                    "acl_file": str(acl),
                    "listener": f"{self.port} 127.0.0.1",
                    "cafile": str(self.ca),
                    "certfile": str(crt),
                    "keyfile": str(key),
                }
            )
        )
        self.conf = folder / "mosquitto.conf"
        # Started as root, mosquitto would switch to its own user, who cannot read the test's private folder.
        stay = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(stay + DEBIAN_MAIN.format(folder=folder))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        stderr = (self.folder / "stderr.log").open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=stderr)
        stderr.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    if self.proc.poll() is None:  # ours answers, not a server that had the port before it
                        return self
                    break
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start (exit {self.proc.returncode}): {self.log()[-2000:]}")

    def log(self) -> str:
        """What mosquitto wrote: its log file, and stderr (where it reports a config it cannot load)."""
        files = [self.folder / "mosquitto.log", self.folder / "stderr.log"]
        return "".join(f.read_text(errors="replace") for f in files if f.exists())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def center_config(tmp_path: Path, broker: Broker, password: str = "pw-center") -> dict:
    """The config dict `edge listen` runs with at the center: user center, TLS to this broker."""
    return {
        "version": 1,
        "node": {"id": "center", "metrics": {"listen": None}},
        "storage": {"dir": str(tmp_path / "center")},
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "username": "center",
            "password": password,
            "tls": {"ca_file": str(broker.ca)},
        },
        "cameras": {"cam": {"source": "/dev/null"}},
    }
