"""A one-node Slurm cluster for the tests marked `slurm`, and for `make slurm-up` / `make slurm-down`.

Every daemon runs from one folder and reads nothing in /etc: munged with its own key and socket, MariaDB with its own
data folder (bound to 127.0.0.1), slurmdbd, slurmctld and slurmd, all configured by the slurm.conf there, which the
clients (sbatch, squeue, sacct, scancel; attnbench's launcher) find through SLURM_CONF. A system's own Slurm, if it
has one, is left alone, and the cluster goes with its folder.

Needs root (slurmd runs each job as the user who submitted it) and Debian's slurm-wlm, slurmdbd, mariadb-server and
munge: `make slurm-install`, as .ci/run does. Accounting (slurmdbd, MariaDB) is not optional: without it `sacct`
knows no job, and a task cancelled or timed out could not be told from one that is still queued.

    python tests/slurm_cluster.py up DIR     # prints `export SLURM_CONF=DIR/slurm.conf`
    python tests/slurm_cluster.py down DIR
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PARTITION = "debug"
CLUSTER = "attnbench"
# Every program the cluster runs; `missing()` names those this machine lacks.
PROGRAMS = {"munged": "munge", "mariadb-install-db": "mariadb-server", "mariadbd": "mariadb-server",
            "slurmdbd": "slurmdbd", "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sacctmgr": "slurm-wlm",
            "sbatch": "slurm-wlm"}
SBIN = ("/usr/sbin", "/sbin")  # where Debian puts the daemons: not on a plain user's PATH
READY_S = 60  # each daemon has this long to answer (a loaded machine; they take ~1 s each on an idle one)
KILL_WAIT_S = 10  # Slurm's KillWait: SIGTERM, then SIGKILL this much later, for a task cancelled or out of time
SLURM_DAEMONS = ("slurmd", "slurmctld", "slurmdbd")


def which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN))


def missing() -> str | None:
    """Why this machine cannot run the cluster, in one line; None when it can."""
    absent = sorted({package for program, package in PROGRAMS.items() if which(program) is None})
    if absent:
        return f"Slurm is not installed (no {', '.join(absent)}): `make slurm-install` (root, apt-get) installs it"
    if os.geteuid() != 0:
        return "the test Slurm cluster needs root (slurmd runs each job as the user who submitted it)"
    return None


def environment(folder: Path) -> dict[str, str]:
    """What a client of the cluster needs in its environment."""
    return {"SLURM_CONF": str(folder / "slurm.conf")}


def up(folder: Path) -> dict[str, str]:
    """Start the cluster's daemons in `folder` (created); the clients' environment. A half-started cluster is
    stopped before the error is raised."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged refuses a socket folder others can write to, or cannot enter
    try:
        ports = _free_ports(4)
        _start_munge(folder)
        _start_mariadb(folder, ports[0])
        _write_config(folder, ports)
        env = os.environ | environment(folder)
        _start(folder, "slurmdbd", [which("slurmdbd")], env)
        _wait(lambda: _answers(["sacctmgr", "-i", "add", "cluster", CLUSTER], env, ok_if="already exists"),
              "slurmdbd to answer", folder / "slurmdbd.log")
        _start(folder, "slurmctld", [which("slurmctld"), "-i"], env)
        _start(folder, "slurmd", [which("slurmd"), "-N", _host()], env)
        _wait(lambda: _node_idle(env), "the node to be idle in sinfo", folder / "slurmctld.log")
    except BaseException:
        down(folder)
        raise
    return environment(folder)


def down(folder: Path) -> None:
    """Cancel every job of the cluster, then stop its daemons (each by the pid it wrote)."""
    if (folder / "slurm.conf").is_file():
        subprocess.run(["scancel", "--full", "--user", "root"], env=os.environ | environment(folder),
                       capture_output=True, timeout=30)
        deadline = time.monotonic() + KILL_WAIT_S + 5  # the jobs' processes end within KillWait
        while time.monotonic() < deadline and _has_jobs(os.environ | environment(folder)):
            time.sleep(0.5)
    _stop([folder / f"{daemon}.pid" for daemon in SLURM_DAEMONS])
    _stop([folder / f"{daemon}.pid" for daemon in ("mariadb", "munged")])  # what the Slurm daemons used


# --- the daemons ----------------------------------------------------------------------------------------------------
def _start_munge(folder: Path) -> None:
    key = folder / "munge.key"
    if not key.is_file():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    subprocess.run([which("munged"), "--force", f"--key-file={key}", f"--socket={folder}/munge.socket",
                    f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                    f"--seed-file={folder}/munged.seed"], check=True, capture_output=True, timeout=READY_S)


def _start_mariadb(folder: Path, port: int) -> None:
    data = folder / "mariadb"
    if not data.is_dir():
        subprocess.run([which("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=300)
    # No grant tables: the only client is slurmdbd, over 127.0.0.1, for a database that lives as long as the tests.
    _start(folder, "mariadb", [which("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=root",
                               f"--socket={folder}/mariadb.sock", f"--port={port}", "--bind-address=127.0.0.1",
                               f"--pid-file={folder}/mariadb.pid", f"--log-error={folder}/mariadb.log",
                               "--skip-grant-tables", "--innodb-lock-wait-timeout=900"], os.environ, detach=True)
    _wait(lambda: (folder / "mariadb.sock").exists(), "MariaDB to listen", folder / "mariadb.log")


def _write_config(folder: Path, ports: list[int]) -> None:
    db_port, dbd_port, ctld_port, slurmd_port = ports
    host = _host()
    node = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True,
                          timeout=READY_S).stdout.splitlines()[0]  # NodeName=host CPUs=2 ... RealMemory=...
    auth = f"AuthType=auth/munge\nAuthInfo=socket={folder}/munge.socket\n"
    dbd = folder / "slurmdbd.conf"
    dbd.write_text(f"{auth}DbdHost=localhost\nDbdPort={dbd_port}\nSlurmUser=root\n"
                   f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={db_port}\n"
                   f"StorageUser=root\nStorageLoc=slurm_acct_db\nPidFile={folder}/slurmdbd.pid\n"
                   f"LogFile={folder}/slurmdbd.log\n")
    dbd.chmod(0o600)  # slurmdbd refuses a config others can read (it may hold the database's password)
    # Facts behind the choices: proctrack/linuxproc and task/affinity need no cgroup (task/none would let a 1-CPU
    # task see every core); cons_tres with CR_Core gives each task its CPUs (CR_Core_Memory without --mem runs an
    # array one task at a time); accounting through slurmdbd is what sacct reads (AccountingStoragePass: the munge
    # socket the clients use to reach slurmdbd).
    (folder / "slurm.conf").write_text(f"""\
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
{auth}CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
KillWait={KILL_WAIT_S}
MailProg=/bin/true
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
AccountingStoragePass={folder}/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")


def _start(folder: Path, name: str, command: list, env, detach: bool = False) -> None:
    """A daemon; Slurm's daemons fork and write their own pid files, MariaDB's is written for it."""
    log = (folder / f"{name}.out").open("ab")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    if detach:
        return  # runs in the foreground: its pid file is its own
    if process.wait(timeout=READY_S) != 0:
        raise RuntimeError(f"{name} did not start: {_tail(folder / f'{name}.out')} {_tail(folder / f'{name}.log')}")


def _stop(pid_files: list[Path]) -> None:
    """SIGTERM to each daemon, then wait for them all (SIGKILL after 30 s)."""
    pids = []
    for pid_file in pid_files:
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):  # never started, or gone
            continue
        pids.append(pid)
    deadline = time.monotonic() + 30
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # MariaDB, started by this process: reaped here
            return False
    except ChildProcessError:  # not this process's child (a daemon forks): its parent reaps it
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- asking the cluster ---------------------------------------------------------------------------------------------
def _answers(command: list[str], env, ok_if: str = "") -> bool:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=READY_S)
    return done.returncode == 0 or bool(ok_if and ok_if in done.stdout + done.stderr)


def _node_idle(env) -> bool:
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=READY_S)
    return done.returncode == 0 and done.stdout.strip() == "idle"


def _has_jobs(env) -> bool:
    done = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and bool(done.stdout.strip())


def _wait(condition, what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {READY_S} s waiting for {what}: {_tail(log)}")
        time.sleep(0.2)


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {log.name})"


def _host() -> str:
    return socket.gethostname().split(".")[0]


def _free_ports(count: int) -> list[int]:
    """Ports free now on 127.0.0.1: MariaDB's, slurmdbd's, slurmctld's, slurmd's."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("up", "down"):
        sys.exit(f"usage: {sys.argv[0]} up|down FOLDER")
    where = Path(sys.argv[2]).resolve()
    if sys.argv[1] == "down":
        down(where)
        sys.exit(0)
    problem = missing()
    if problem:
        sys.exit(f"slurm-up: {problem}")
    client_env = up(where)
    print(f"Slurm is up in {where} (partition {PARTITION}); its clients need:\n"
          + "".join(f"  export {key}={value}\n" for key, value in client_env.items()))
