"""A real Mosquitto broker for the tests: TLS with a CA made now, passwords, the shipped ACL."""

from __future__ import annotations

import datetime
import ipaddress
import os
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


class Broker:
    """Mosquitto on a free loopback port: TLS, password file, the repo's ACL, persistence."""

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
        shutil.copy(REPO / "configs" / "mosquitto" / "acl", acl)
        acl.chmod(0o600)
        (folder / "data").mkdir(exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        # Started as root, mosquitto would switch to its own user, who cannot read the test's private folder.
        stay = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            stay + "per_listener_settings false\nallow_anonymous false\n"
            f"password_file {passwd}\nacl_file {acl}\n"
            f"persistence true\npersistence_location {folder / 'data'}/\nautosave_interval 1\n"
            f"log_dest file {folder / 'mosquitto.log'}\nlog_type error\nlog_type warning\nlog_type notice\n"
            f"listener {self.port} 127.0.0.1\ncafile {self.ca}\ncertfile {crt}\nkeyfile {key}\n"
            "require_certificate false\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {(self.folder / 'mosquitto.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
