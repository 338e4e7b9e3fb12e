#!/usr/bin/env bash
# bash .ci/slurm_setup.sh
#
# Installs the Debian packages that `python -m harness.local_slurm start` needs for a one-node
# SLURM cluster with accounting (Slurm 22.05 on Debian 12). Idempotent: does nothing when every
# daemon is already installed. Needs root (or sudo) and apt; installs nothing into Python.
# The package scripts are kept from starting services (the harness starts its own daemons).
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
BINARIES=(slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mariadbd mariadb-install-db)

missing=()
for b in "${BINARIES[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "slurm_setup: already installed ($(slurmctld -V 2>/dev/null || echo slurm))"
    exit 0
fi
echo "slurm_setup: missing ${missing[*]}; installing ${PACKAGES[*]}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Keep invoke-rc.d from starting mariadb/munge/slurm services during install (restored after).
added_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    added_policy=1
fi
cleanup() { if [ "$added_policy" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s)
$SUDO apt-get update -qq
t1=$(date +%s)
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
    || $SUDO apt-get install -y --no-install-recommends "${PACKAGES[@]}"  # again, to show why
t2=$(date +%s)
echo "slurm_setup: apt-get update $((t1 - t0)) s, install $((t2 - t1)) s ($(slurmctld -V))"
