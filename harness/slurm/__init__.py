"""Config files for the one-node SLURM cluster that `python -m harness.local_slurm start` runs.

Pure functions (text in, text out) so they are tested without Slurm installed; the daemons,
ports and PIDs are handled by `harness.local_slurm`. Written for Slurm 22.05 (Debian 12).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CLUSTER = "harness"
ACCOUNT = "harness"
PARTITION = "debug"


@dataclass(frozen=True)
class Node:
    """This machine as `slurmd -C` sees it."""

    name: str      # NodeName (the short hostname slurmd registers as)
    cpus: int      # real logical CPUs
    memory_mb: int  # real total memory


def parse_slurmd_c(text: str) -> Node:
    """Reads `slurmd -C` output ("NodeName=vm CPUs=2 ... RealMemory=24105")."""
    fields = dict(re.findall(r"(\w+)=(\S+)", text))
    return Node(name=fields["NodeName"], cpus=int(fields["CPUs"]),
                memory_mb=int(fields["RealMemory"]))


def slurm_conf(node: Node, state_dir: str, ports: dict[str, int], munge_socket: str,
               cpus: int = 4, cred_expire_s: int = 10) -> str:
    """slurm.conf: one node, partition `debug`, accounting through slurmdbd, requeue on.

    cpus: CPUs the node advertises (at least the real count); more than the cores lets several
    1-CPU jobs share a small machine (SlurmdParameters=config_overrides).
    cred_expire_s: also how long a requeued job waits before it is eligible again (Slurm's default
    is 120 s, which stalls a timeout-and-requeue round trip).
    """
    cpus = max(cpus, node.cpus)
    memory = max(256, int(node.memory_mb * 0.9))  # below the real total, or slurmd drains the node
    d = state_dir
    return f"""\
# Written by `python -m harness.local_slurm start`; edits are overwritten on the next start.
ClusterName={CLUSTER}
SlurmctldHost={node.name}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire={cred_expire_s}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
# Requeue: batch jobs may be requeued (submitit's SIGUSR2 handler calls `scontrol requeue`);
# a job under QOS `high` preempts `normal` jobs by requeueing them.
JobRequeue=1
PreemptType=preempt/qos
PreemptMode=REQUEUE
KillWait=5
MinJobAge=300
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName={node.name} NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def slurmdbd_conf(state_dir: str, ports: dict[str, int], munge_socket: str,
                  db_password: str) -> str:
    """slurmdbd.conf: MariaDB on 127.0.0.1 (must be mode 0600, owned by SlurmUser)."""
    d = state_dir
    return f"""\
# Written by `python -m harness.local_slurm start`.
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
LogFile={d}/log/slurmdbd.log
PidFile={d}/run/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadb']}
StorageUser=slurm
StoragePass={db_password}
StorageLoc=slurm_acct_db
"""


def cgroup_conf() -> str:
    """cgroup.conf: unused (proctrack/linuxproc, task/none) but keeps slurmd from guessing."""
    return """\
# Written by `python -m harness.local_slurm start`. No cgroup plugin is in use.
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainRAMSpace=no
"""
