"""Run systemd/edge.service (or edge-center.service), unchanged, under a real systemd manager on a machine whose
PID 1 is not systemd.

A container or CI runner rarely has systemd as PID 1, so `systemd-run -p ...` cannot be used. This starts
/lib/systemd/systemd as PID 1 of its own pid, mount, uts, ipc, net and cgroup namespaces and lets *it*
start the unit, so every sandbox setting is applied by systemd itself, not imitated.

It is fenced so that nothing of the host is touched: the manager sees only the unit and a few empty stub
targets (so sysinit.target pulls in nothing: no tmpfiles, no sysctl, no udev); /run, /tmp, /var/tmp,
/var/lib and /opt are fresh tmpfs; /etc is a copy (with the unit's user, `edge` or `edge-center`, added and its
/etc/NAME folder); /dev is a private tmpfs with
the pseudo devices, a devpts instance and a stand-in /dev/video0 (char 81:0, no driver behind it);
/proc/sys and /sys are read-only; the manager's cgroups live under one cgroup2 directory that is removed
afterwards. Needs root, util-linux `unshare`/`nsenter` and a cgroup2 mount.

What differs from a real install, and why: `/opt/NAME/.venv` is a shim venv over this machine's Python and
site-packages (bind-mounted read-only), and a drop-in sets PYTHONPATH (this checkout), LD_LIBRARY_PATH (the
Python is a pyenv build whose libpython lives under /root, which ProtectHome= hides) and sends output to a
file (there is no journald). No sandbox setting is changed by the drop-in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")

# Targets and the slice a service depends on by default; empty, so they start nothing.
_STUBS = [
    "sandbox.target",
    "sysinit.target",
    "basic.target",
    "shutdown.target",
    "network.target",
    "network-online.target",
    "multi-user.target",
    "system.slice",
]

_INNER = r"""
set -eu
S=/run/sbx
mount --make-rprivate /
mount -t proc proc /proc
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p $S/host $S/etc $S/dev $S/units
mount --bind "$SBX_HOST" $S/host
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs $d; done
for d in /var/lib /opt; do mount -t tmpfs -o mode=755 tmpfs $d; done

# /etc: a copy with the service's user and /etc/$SVC; no unit files of the host's.
cp -a /etc/. $S/etc/
echo "$SVC:x:$EDGE_UID:$EDGE_UID:$SVC service:/nonexistent:/usr/sbin/nologin" >> $S/etc/passwd
echo "$SVC:x:$EDGE_UID:" >> $S/etc/group
echo "$SVC:!:1::::::" >> $S/etc/shadow
rm -rf $S/etc/systemd/system && mkdir $S/etc/systemd/system
cp -a $S/host/etc-edge $S/etc/$SVC
mount --bind $S/etc /etc
chgrp -R $EDGE_UID /etc/$SVC && chmod 0750 /etc/$SVC  # root:NAME, mode 0750, as the README installs it

# /opt/$SVC/.venv: this machine's Python and site-packages, read-only.
V=/opt/$SVC/.venv
mkdir -p /opt/py $V/bin $V/lib/python$PYVER/site-packages
mount --bind "$PY_HOME" /opt/py && mount -o remount,bind,ro /opt/py
mount --bind "$PY_SITE" $V/lib/python$PYVER/site-packages
mount -o remount,bind,ro $V/lib/python$PYVER/site-packages
ln -s /opt/py/bin/python$PYVER $V/bin/python
printf 'home = /opt/py/bin\ninclude-system-site-packages = false\n' > $V/pyvenv.cfg
printf '#!%s/bin/python\nimport sys\nfrom %s import main\nsys.exit(main())\n' $V "$ENTRY" > $V/bin/$SVC
chmod 755 $V/bin/$SVC

# /dev: pseudo devices, devpts, shm, and a video4linux node with no driver behind it.
mount -t tmpfs -o mode=755 tmpfs $S/dev
for n in null zero full random urandom tty; do touch $S/dev/$n; mount --bind /dev/$n $S/dev/$n; done
mkdir $S/dev/pts $S/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts $S/dev/pts
ln -s pts/ptmx $S/dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs $S/dev/shm
ln -s /proc/self/fd $S/dev/fd
mknod -m 660 $S/dev/video0 c 81 0 && chgrp video $S/dev/video0
mount --move $S/dev /dev

mount --bind /sys /sys && mount -o remount,bind,ro /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup

# Only our units: the stubs and $SVC.service with its drop-in.
cp -a $S/host/units/. $S/units/
for d in /usr/lib/systemd/system /usr/lib/systemd/system-generators; do
  [ -d $d ] && mount --bind $S/units $d
done
mount --make-rshared /  # as on a booted system; credentials are set up in a child namespace and propagate back
exec env -i container=edge-sandbox PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_UNIT_PATH=$S/units \
  $SYSTEMD --system --unit=sandbox.target --log-target=console --log-level=notice \
  </dev/null >$S/host/manager.log 2>&1
"""


def unavailable() -> str | None:
    """Why the sandbox cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts)"
    for tool in ("unshare", "nsenter", "mknod"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} not installed"
    if _cgroup2_root() is None:
        return "no cgroup2 mount"
    return None


def _cgroup2_root() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        if right.split()[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def _free_uid() -> int:
    used = set()
    for table in ("/etc/passwd", "/etc/group"):
        used |= {int(line.split(":")[2]) for line in Path(table).read_text().splitlines() if line.count(":") >= 3}
    return next(u for u in range(990, 900, -1) if u not in used)


class UnitSandbox:
    """`with UnitSandbox(work, unit_text, etc_files, repo) as sb:` then sb.systemctl(...), sb.path(...).

    `name` is the service's: its unit (NAME.service), user, /etc/NAME (holding etc_files: name -> (bytes,
    mode)), /opt/NAME/.venv/bin/NAME (a script calling `entry`'s main()) and the log file work/NAME.log."""

    def __init__(
        self,
        work: Path,
        unit: str,
        etc_edge: dict[str, tuple[bytes, int]],
        repo: Path,
        name: str = "edge",
        entry: str = "edge.cli",
    ):
        self.work = work
        self.unit = unit
        self.etc_edge = etc_edge
        self.repo = repo
        self.name = name
        self.entry = entry
        self.proc: subprocess.Popen | None = None
        self.pid1 = 0
        self.cgroup: Path | None = None

    def __enter__(self) -> UnitSandbox:
        self._prepare()
        root = _cgroup2_root()
        assert root is not None
        own = Path(Path("/proc/self/cgroup").read_text().splitlines()[-1].split(":", 2)[2].lstrip("/"))
        self.cgroup = root / own / f"edge-unit-sandbox-{os.getpid()}"
        self.cgroup.mkdir()
        pyver = sysconfig.get_config_var("py_version_short")
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "SBX_HOST": str(self.work),
            "EDGE_UID": str(_free_uid()),
            "PY_HOME": sys.base_prefix,
            "PY_SITE": sysconfig.get_paths()["purelib"],
            "PYVER": pyver,
            "SYSTEMD": str(SYSTEMD),
            "SVC": self.name,
            "ENTRY": self.entry,
        }
        cg = str(self.cgroup / "cgroup.procs")
        script = f'echo $$ > {cg} && exec unshare --pid --fork --mount --uts --ipc --net --cgroup bash "$0"'
        (self.work / "inner.sh").write_text(_INNER)
        self.proc = subprocess.Popen(["bash", "-c", script, str(self.work / "inner.sh")], env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.pid1 = self._child_of(self.proc.pid)
            if self.pid1 and Path(f"/proc/{self.pid1}/comm").read_text().strip() == "systemd":
                out = self.systemctl("is-system-running", check=False).stdout.strip()
                if out in ("running", "degraded"):
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        log = (self.work / "manager.log").read_text() if (self.work / "manager.log").exists() else ""
        self.__exit__(None, None, None)
        raise RuntimeError(f"the sandboxed systemd did not come up:\n{log}")

    def _prepare(self) -> None:
        edge = self.work / "etc-edge"
        edge.mkdir()
        for name, (data, mode) in self.etc_edge.items():
            (edge / name).write_bytes(data)
            (edge / name).chmod(mode)
        units = self.work / "units"
        units.mkdir()
        for stub in _STUBS:
            (units / stub).write_text("[Unit]\nDefaultDependencies=no\n")
        (units / f"{self.name}.service").write_text(self.unit)
        (units / f"{self.name}.service.d").mkdir()
        (units / f"{self.name}.service.d" / "sandbox-test.conf").write_text(
            "[Service]\n"
            f"Environment=PYTHONPATH={self.repo} LD_LIBRARY_PATH=/opt/py/lib\n"
            f"StandardOutput=append:/run/sbx/host/{self.name}.log\n"
            "StandardError=inherit\n"
            "Restart=no\n"
        )

    @staticmethod
    def _child_of(pid: int) -> int:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return 0
        return int(kids[0]) if kids else 0

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A command inside the sandbox's namespaces, as root, outside any unit."""
        argv = ("nsenter", "-t", str(self.pid1), "-a", *argv)
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *[f"-p{p}" for p in props]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def path(self, inside: str) -> Path:
        """A path as the sandbox's mount namespace sees it, readable from here."""
        return Path(f"/proc/{self.pid1}/root") / inside.lstrip("/")

    def __exit__(self, *exc) -> None:
        if self.pid1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)  # PID 1 of the namespace: every process in it goes too
        if self.proc is not None:
            self.proc.wait(timeout=30)
        if self.cgroup is not None and self.cgroup.exists():
            for d in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                _rmdir(d)
            _rmdir(self.cgroup)


def _rmdir(d: Path) -> None:
    for _ in range(50):  # a cgroup is removable once the killed processes are reaped
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    d.rmdir()
