"""A one-node SLURM cluster with accounting on loopback, for tests and local sweeps.

    python -m harness.local_slurm start [--dir DIR] [--timeout 60]
    python -m harness.local_slurm stop [--dir DIR]
    python -m harness.local_slurm status [--dir DIR]

Needs root and the Debian 12 packages (Slurm 22.05): `bash .ci/slurm_setup.sh` installs them;
this module installs nothing. `start` runs munged (as user munge, its own key, the default
socket), MariaDB (its own datadir, 127.0.0.1 on a free port), slurmdbd, slurmctld and slurmd,
each in its own session with logs and PIDs under the state folder (--dir, else
$HARNESS_SLURM_DIR, else /tmp/harness-slurm); registers the cluster in accounting; and returns
once `sinfo` shows the node idle and `sacct` answers.

The node advertises 4 CPUs whatever the cores; partition `debug` is the default (no time
limit); requeue is on (submitit's SIGUSR2 handler requeues a Checkpointable job, eligible again
after ~11 s, not Slurm's 121 s); QOS `high` preempts `normal` jobs by requeueing them.

slurm.conf is also written to /etc/slurm/slurm.conf, so sbatch/squeue/sacct and submitit need no
environment; otherwise export SLURM_CONF=<dir>/slurm.conf (what `start()` returns). Slurm state
survives stop/start (job ids keep counting, ports stay the same); `stop` cancels the jobs still
queued. Delete the state folder to start from scratch, and then never reuse a submitit folder
from before (job ids restart at 1).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from harness import slurm as conf

DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")  # start order
NOT_INSTALLED = ("SLURM is not installed: run `bash .ci/slurm_setup.sh` (Debian packages "
                 "slurmctld slurmd slurm-client slurmdbd munge mariadb-server)")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
# The default socket: sacctmgr/sacct in 22.05 ignore AuthInfo=socket= on slurmdbd connections.
MUNGE_SOCKET = "/run/munge/munge.socket.2"


class SlurmNotInstalled(RuntimeError):
    """A daemon binary is missing; the message says how to install them."""


class StartError(RuntimeError):
    """A daemon did not come up in time; the message names the log to read."""


def state_path(state_dir: str | os.PathLike | None = None) -> Path:
    return Path(state_dir or os.environ.get("HARNESS_SLURM_DIR") or "/tmp/harness-slurm").resolve()


def env(state_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment variables that point Slurm clients (sbatch, sacct, submitit) at this cluster."""
    return {"SLURM_CONF": str(state_path(state_dir) / "slurm.conf")}


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def check_installed() -> None:
    """Raises SlurmNotInstalled (one clear line) if a daemon binary is missing."""
    needed = (*DAEMONS, "mariadb-install-db", "mariadb", "sacctmgr", "sinfo", "sacct", "sbatch")
    if any(_which(b) is None for b in needed):
        raise SlurmNotInstalled(NOT_INSTALLED)


def _say(msg: str) -> None:
    print(f"local_slurm: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

def _pid_file(d: Path, name: str) -> Path:
    return d / "pids" / f"{name}.pid"


def _alive(pid: int, name: str) -> bool:
    """True if pid runs and is `name` (guards against a reused PID); reaps our own zombies."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and name.startswith(comm[:15])


def _pids(d: Path) -> dict[str, int | None]:
    """Recorded PID of each daemon that is running, else None."""
    out: dict[str, int | None] = {}
    for name in DAEMONS:
        try:
            pid = int(_pid_file(d, name).read_text())
        except (OSError, ValueError):
            pid = None
        out[name] = pid if pid and _alive(pid, name) else None
    return out


def _spawn(d: Path, name: str, argv: list[str], user: str | None = None) -> int:
    """`setsid argv </dev/null >>log 2>&1 &`, PID recorded; returns the PID."""
    log = open(d / "log" / f"{name}.out", "ab")
    kw = {}
    if user:
        pw = pwd.getpwnam(user)
        kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True, cwd=d,
                            env={**os.environ, **env(d)}, **kw)
    log.close()
    _pid_file(d, name).write_text(f"{proc.pid}\n")
    return proc.pid


def _run(argv: list[str], d: Path, check: bool = True,
         timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check,
                          env={**os.environ, **env(d)}, stdin=subprocess.DEVNULL)


def _wait(what: str, ok, deadline: float, log: Path, pid: int | None = None,
          name: str = "") -> None:
    """Polls ok() until true; raises StartError naming the log on deadline or daemon death."""
    while True:
        try:
            if ok():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        if pid is not None and not _alive(pid, name):
            raise StartError(f"{name} exited while waiting for {what}; read {log}\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise StartError(f"timed out waiting for {what}; read {log}\n{_tail(log)}")
        time.sleep(0.1)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- start / stop / status

def start(state_dir: str | os.PathLike | None = None, timeout: float = 60) -> dict[str, str]:
    """Starts the cluster (or finds it running); returns the env vars that point clients at it."""
    check_installed()
    if os.geteuid() != 0:
        raise StartError("the local SLURM cluster runs its daemons as root: run as root")
    d = state_path(state_dir)
    pids = _pids(d)
    if all(pids.values()):
        _say(f"already running (state in {d})")
        return env(d)
    if any(pids.values()):
        _say("some daemons are down: restarting all")
        stop(d, cancel_jobs=False)
    t0 = time.monotonic()
    deadline = t0 + timeout
    for sub in ("log", "pids", "run", "state", "spool", "munge", "mysql"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)

    node = conf.parse_slurmd_c(_run([_which("slurmd"), "-C"], d).stdout)
    ports = _ports(d)
    password = _db_password(d)
    (d / "slurm.conf").write_text(conf.slurm_conf(node, str(d), ports, MUNGE_SOCKET))
    (d / "cgroup.conf").write_text(conf.cgroup_conf())
    dbd = d / "slurmdbd.conf"
    dbd.write_text(conf.slurmdbd_conf(str(d), ports, MUNGE_SOCKET, password))
    dbd.chmod(0o600)
    _copy_to_etc(d / "slurm.conf")

    try:
        _start_daemons(d, node, ports, password, deadline)
    except BaseException:
        stop(d, cancel_jobs=False)
        raise
    _say(f"cluster up in {time.monotonic() - t0:.1f} s (state in {d})")
    return env(d)


def _start_daemons(d: Path, node: conf.Node, ports: dict[str, int], password: str,
                   deadline: float) -> None:
    _start_munge(d, MUNGE_SOCKET, deadline)
    _start_mariadb(d, ports["mariadb"], password, deadline)
    pid = _spawn(d, "slurmdbd", [_which("slurmdbd"), "-D"])
    log = d / "log" / "slurmdbd.log"
    _wait("slurmdbd", lambda: _listening(ports["slurmdbd"]), deadline, log, pid, "slurmdbd")
    _register(d, deadline, log)
    pid = _spawn(d, "slurmctld", [_which("slurmctld"), "-D", "-i"])
    log = d / "log" / "slurmctld.log"
    _wait("slurmctld", lambda: _listening(ports["slurmctld"]), deadline, log, pid, "slurmctld")
    pid = _spawn(d, "slurmd", [_which("slurmd"), "-D", "-N", node.name])
    log = d / "log" / "slurmd.log"
    _wait("the node to be idle in sinfo", lambda: _node_ready(d), deadline, log, pid, "slurmd")
    _wait("sacct", lambda: _run(["sacct", "-n", "-X"], d, check=False).returncode == 0,
          deadline, d / "log" / "slurmdbd.log")


def _ports(d: Path) -> dict[str, int]:
    """Ports kept across restarts (a job step still running reconnects to a restarted slurmctld);
    Slurm's defaults 6817-6819 when free, else any free port."""
    f = d / "ports.json"
    try:
        old = json.loads(f.read_text())
    except (OSError, ValueError):
        old = {}
    defaults = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819, "mariadb": 0}
    ports = {}
    for name, default in defaults.items():
        for port in (old.get(name), default):
            if port and _port_free(port) and port not in ports.values():
                ports[name] = port
                break
        else:
            ports[name] = _free_port()
    f.write_text(json.dumps(ports))
    return ports


def _copy_to_etc(path: Path) -> None:
    """Clients without SLURM_CONF (and submitit) read /etc/slurm/slurm.conf."""
    try:
        Path("/etc/slurm").mkdir(exist_ok=True)
        shutil.copyfile(path, "/etc/slurm/slurm.conf")
    except OSError as e:
        _say(f"could not write /etc/slurm/slurm.conf ({e}): export SLURM_CONF={path}")


def _db_password(d: Path) -> str:
    f = d / "mysql" / "slurm.password"
    if not f.exists():
        f.write_text(secrets.token_hex(12))
        f.chmod(0o600)
    return f.read_text().strip()


def _start_munge(d: Path, sock: str, deadline: float) -> None:
    mdir = d / "munge"
    key = mdir / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    pw = pwd.getpwnam("munge")
    for p in (mdir, key):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    mdir.chmod(0o755)
    key.chmod(0o400)
    run = Path(sock).parent
    run.mkdir(parents=True, exist_ok=True)
    os.chown(run, pw.pw_uid, pw.pw_gid)
    run.chmod(0o755)
    pidfile = mdir / "munged.pid"  # munged writes it once its socket is up
    pidfile.unlink(missing_ok=True)
    pid = _spawn(d, "munged", [_which("munged"), "-F", f"--socket={sock}", f"--key-file={key}",
                                f"--pid-file={pidfile}", f"--seed-file={mdir}/munged.seed"],
                 user="munge")
    try:
        _wait("munged", lambda: pidfile.read_text().strip() == str(pid), deadline,
              d / "log" / "munged.out", pid, "munged")
    except StartError as e:
        raise StartError(f"{e}\n(a munged of the system's own on {sock}? `systemctl stop munge`)")


def _start_mariadb(d: Path, port: int, password: str, deadline: float) -> None:
    mdir = d / "mysql"
    data, sock = mdir / "data", mdir / "mysqld.sock"
    pw = pwd.getpwnam("mysql")
    os.chown(mdir, pw.pw_uid, pw.pw_gid)
    log = d / "log" / "mariadbd.out"
    # a throwaway accounting db: no fsync (a clean stop still flushes), ~3 s faster to set up
    fast = ["--innodb-flush-method=nosync", "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0", "--innodb-use-native-aio=0", "--skip-name-resolve"]
    if not (data / "mysql").is_dir():
        r = subprocess.run([_which("mariadb-install-db"), "--no-defaults", "--user=mysql",
                            f"--datadir={data}", "--auth-root-authentication-method=socket",
                            "--skip-test-db", *fast],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        log.write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise StartError(f"mariadb-install-db failed; read {log}\n{_tail(log)}")
    sock.unlink(missing_ok=True)
    pid = _spawn(d, "mariadbd", [
        _which("mariadbd"), "--no-defaults", "--user=mysql", f"--datadir={data}",
        f"--socket={sock}", f"--port={port}", "--bind-address=127.0.0.1",
        f"--pid-file={mdir}/mariadbd.pid", *fast,
        "--innodb-buffer-pool-size=128M", "--innodb-lock-wait-timeout=900"])
    client = [_which("mariadb"), "--no-defaults", f"--socket={sock}", "-uroot"]
    _wait("mariadbd", lambda: subprocess.run(client + ["-e", "SELECT 1"], capture_output=True,
                                             timeout=10).returncode == 0,
          deadline, log, pid, "mariadbd")
    sql = "".join(f"CREATE USER IF NOT EXISTS 'slurm'@'{h}' IDENTIFIED BY '{password}';"
                  f"ALTER USER 'slurm'@'{h}' IDENTIFIED BY '{password}';"
                  f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{h}';"
                  for h in ("127.0.0.1", "localhost"))
    r = subprocess.run(client + ["-e", sql], capture_output=True, text=True)
    if r.returncode != 0:
        raise StartError(f"could not create the MariaDB user for slurmdbd: {r.stderr.strip()}")


def _register(d: Path, deadline: float, log: Path) -> None:
    """Adds cluster, account, user root and QOS `high` (preempts `normal` by requeue), once."""
    def listed(kind: str, fmt: str) -> list[str]:
        r = _run(["sacctmgr", "-n", "-P", "list", kind, f"format={fmt}"], d)
        return r.stdout.split()

    ping = ["sacctmgr", "-n", "-P", "list", "cluster"]
    _wait("sacctmgr to reach slurmdbd", lambda: _run(ping, d, check=False).returncode == 0,
          deadline, log)
    steps = []
    if conf.CLUSTER not in listed("cluster", "cluster"):
        steps.append(["add", "cluster", conf.CLUSTER])
    if conf.ACCOUNT not in listed("account", "account"):
        steps.append(["add", "account", conf.ACCOUNT, f"cluster={conf.CLUSTER}"])
    if "high" not in listed("qos", "name"):
        steps.append(["add", "qos", "high", "Priority=100", "Preempt=normal",
                      "PreemptMode=requeue"])
    # `add cluster` already made user root (account root): add it to our account, allow QOS high
    assocs = listed("assoc", "account,user,qos")
    if not any(a.startswith(f"{conf.ACCOUNT}|root|") for a in assocs):
        steps.append(["add", "user", "root", f"account={conf.ACCOUNT}", f"cluster={conf.CLUSTER}"])
    if f"{conf.ACCOUNT}|root|high,normal" not in assocs:
        steps.append(["modify", "user", "where", "name=root", "set", "qos=normal,high",
                      "DefaultQOS=normal"])
    if f"root|{conf.ACCOUNT}" not in listed("user", "user,defaultaccount"):
        steps.append(["modify", "user", "where", "name=root", "set",
                      f"DefaultAccount={conf.ACCOUNT}"])
    for step in steps:
        r = _run(["sacctmgr", "-i", *step], d, check=False)
        if r.returncode != 0:
            raise StartError(f"sacctmgr {' '.join(step)} failed: {r.stdout}{r.stderr}; read {log}")


def _node_ready(d: Path) -> bool:
    """Node up and responding: idle, or busy with jobs that survived a restart (no `*`)."""
    r = _run(["sinfo", "-h", "-o", "%T"], d, check=False, timeout=10)
    return r.returncode == 0 and r.stdout.strip() in ("idle", "mixed", "allocated")


def stop(state_dir: str | os.PathLike | None = None, timeout: float = 30,
         cancel_jobs: bool = True) -> list[str]:
    """Cancels queued jobs (unless cancel_jobs=False), then stops the daemons by recorded PID
    (SIGTERM, SIGKILL after timeout); returns the daemons it stopped."""
    d = state_path(state_dir)
    pids = _pids(d)
    if cancel_jobs and pids["slurmctld"] and pids["slurmd"] and pids["munged"]:
        _cancel_jobs(d, timeout)
    stopped = []
    for name in reversed(DAEMONS):
        pid = pids[name]
        if pid is None:
            continue
        _kill(pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        while _alive(pid, name) and time.monotonic() < end:
            time.sleep(0.05)
        if _alive(pid, name):
            _say(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f} s: SIGKILL")
            _kill(pid, signal.SIGKILL)
            while _alive(pid, name):
                time.sleep(0.05)
        stopped.append(name)
    for name in DAEMONS:
        _pid_file(d, name).unlink(missing_ok=True)
    return stopped


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _cancel_jobs(d: Path, timeout: float) -> None:
    """Cancels jobs left in the queue and waits for their steps to end, so that no job process
    outlives the cluster (nor retries forever to report to a stopped slurmctld)."""
    def queue() -> list[str]:
        r = _run(["squeue", "-h", "-o", "%i"], d, check=False, timeout=10)
        return r.stdout.split() if r.returncode == 0 else []

    jobs = queue()
    if not jobs:
        return
    _say(f"cancelling {len(jobs)} job(s) still in the queue: {' '.join(jobs)}")
    _run(["scancel", *jobs], d, check=False)
    end = time.monotonic() + timeout
    while queue() and time.monotonic() < end:
        time.sleep(0.2)


def status(state_dir: str | os.PathLike | None = None) -> dict:
    """{"daemons": {name: pid or None}, "up": all running, "sinfo": sinfo output or error}."""
    d = state_path(state_dir)
    pids = _pids(d)
    up = all(pids.values())
    sinfo = ""
    if pids["slurmctld"] and _which("sinfo"):
        r = _run(["sinfo"], d, check=False, timeout=10)
        sinfo = (r.stdout + r.stderr).strip()
    return {"daemons": pids, "up": up, "sinfo": sinfo, "state_dir": str(d)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.local_slurm",
                                description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("start", "stop", "status"))
    p.add_argument("--dir", default=None,
                   help="state folder (default $HARNESS_SLURM_DIR, else /tmp/harness-slurm)")
    p.add_argument("--timeout", type=float, default=60,
                   help="seconds `start` waits for the cluster")
    a = p.parse_args(argv)
    if a.command == "start":
        try:
            e = start(a.dir, a.timeout)
        except SlurmNotInstalled as err:
            print(err, file=sys.stderr)
            return 2
        except StartError as err:
            _say(str(err))
            return 1
        print(" ".join(f"export {k}={v}" for k, v in e.items()))
        return 0
    if a.command == "stop":
        stopped = stop(a.dir)
        _say(f"stopped {', '.join(stopped)}" if stopped else "not running")
        return 0
    s = status(a.dir)
    for name, pid in s["daemons"].items():
        print(f"{name:<10} running  pid {pid}" if pid else f"{name:<10} stopped")
    if s["sinfo"]:
        print(s["sinfo"])
    return 0 if s["up"] else 1


if __name__ == "__main__":
    sys.exit(main())
