#!/usr/bin/env bash
# A real single-node SLURM cluster on loopback for nlbench's launcher tests.
#
#   slurm/test-cluster.sh start    install the packages if missing, write configs, start the daemons
#   slurm/test-cluster.sh stop     stop the daemons this script started (by pid file only)
#   slurm/test-cluster.sh status   show whether each daemon is alive and what sinfo says
#
# Everything (configs, state, spool, logs, pid files, the MariaDB data folder, the munge key) lives in
# one folder of its own, $NLBENCH_SLURM_DIR (default /tmp/nlbench-slurm). After `start`, that folder
# holds `env`: `source "$NLBENCH_SLURM_DIR/env"` exports SLURM_CONF so sbatch/sinfo/sacct find it.
#
# Daemons run as root (munged as the munge user) and are started directly, without systemd: the
# CI machines have none. Accounting (slurmdbd + MariaDB on 127.0.0.1) is not optional: submitit
# reads job states only through sacct.
set -euo pipefail

DIR="${NLBENCH_SLURM_DIR:-/tmp/nlbench-slurm}"
CLUSTER="${NLBENCH_SLURM_CLUSTER:-nlbench}"
PARTITION="${NLBENCH_SLURM_PARTITION:-debug}"
CTLD_PORT="${NLBENCH_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${NLBENCH_SLURM_SLURMD_PORT:-6818}"
DBD_PORT="${NLBENCH_SLURM_DBD_PORT:-6819}"
DB_PORT="${NLBENCH_SLURM_DB_PORT:-3307}"
DB_PASS="nlbench-test"
MUNGE_SOCKET=/run/munge/munge.socket.2
PACKAGES=(slurmctld slurmd slurmdbd slurm-client slurm-wlm-basic-plugins munge mariadb-server)
DAEMONS=(slurmd slurmctld slurmdbd mariadb munged)  # stop order (reverse of start)

log() { echo "test-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_alive() {  # pid_alive NAME -> 0 when NAME's pid file names a live process
    local f="$DIR/run/$1.pid"
    [[ -s "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local t=0
    until "$@" >/dev/null 2>&1; do
        sleep 0.5; t=$((t + 1))
        if (( t > limit * 2 )); then die "timed out after ${limit}s waiting for $what (logs in $DIR/log)"; fi
    done
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if (( ${#missing[@]} )); then
        [[ $(id -u) -eq 0 ]] || die "missing packages (${missing[*]}) and not root to install them"
        log "installing ${missing[*]}"
        # policy-rc.d keeps the packages' own init scripts from starting system-wide daemons.
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

write_configs() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    # About 85% of physical memory, so slurmd does not drain the node for claiming too much.
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)
    mkdir -p "$DIR"/{etc,run,log,state,spool,munge,mysql}

    cat >"$DIR/etc/slurm.conf" <<EOF
# Written by slurm/test-cluster.sh: a single-node test cluster on loopback.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job can start again after ~10 s instead of the default 120 s.
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd.%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# A requeued job may start again cred_expire+1 s later, but only a scheduler pass starts it: short
# intervals (defaults 30 s backfill, 60 s main) bring a requeue round trip from ~40 s to ~15 s.
SchedulerParameters=bf_interval=2,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem takes the whole node and jobs run one at a time.
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    cat >"$DIR/etc/slurmdbd.conf" <<EOF
# Written by slurm/test-cluster.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"

    cat >"$DIR/env" <<EOF
# Source this file to talk to the nlbench test cluster.
export SLURM_CONF=$DIR/etc/slurm.conf
export NLBENCH_SLURM_DIR=$DIR
EOF
}

start_munge() {
    pid_alive munged && return 0
    # slurmctld's connection to slurmdbd ignores AuthInfo=socket=..., so munged must listen on the
    # default socket. A munged that already answers there (the system's) is used as it is.
    if [[ -S "$MUNGE_SOCKET" ]] && munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
        log "using the munged already listening on $MUNGE_SOCKET"
        return 0
    fi
    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    # munged insists that its key and folders belong to it and are not group/world writable.
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    chown munge:munge "$(dirname "$MUNGE_SOCKET")"
    chown -R munge:munge "$DIR/munge"
    chmod 700 "$DIR/munge"
    chmod 400 "$DIR/munge/munge.key"
    touch "$DIR/run/munged.pid" "$DIR/log/munged.log"
    chown munge:munge "$DIR/run/munged.pid" "$DIR/log/munged.log"
    runuser -u munge -- /usr/sbin/munged \
        --key-file="$DIR/munge/munge.key" \
        --socket="$MUNGE_SOCKET" \
        --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" \
        --num-threads=10 \
        --force
    wait_for 10 munged bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
}

start_mariadb() {
    pid_alive mariadb && return 0
    if [[ ! -d "$DIR/mysql/mysql" ]]; then
        mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root \
            --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
    fi
    # Loopback only; its own socket and port so it never meets a system MariaDB.
    /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DIR/mysql" \
        --socket="$DIR/run/mariadb.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --skip-name-resolve --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 >/dev/null 2>&1 &
    wait_for 60 mariadb mariadb --no-defaults -S "$DIR/run/mariadb.sock" -u root -e "SELECT 1"
    mariadb --no-defaults -S "$DIR/run/mariadb.sock" -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurm() {
    export SLURM_CONF="$DIR/etc/slurm.conf"
    if ! pid_alive slurmdbd; then
        # slurmdbd reads slurmdbd.conf from the folder of $SLURM_CONF.
        /usr/sbin/slurmdbd
        wait_for 30 slurmdbd pid_alive slurmdbd
        wait_for 30 "slurmdbd to listen" bash -c "exec 3<>/dev/tcp/127.0.0.1/$DBD_PORT"
    fi
    if ! pid_alive slurmctld; then
        /usr/sbin/slurmctld -f "$SLURM_CONF"
        wait_for 30 slurmctld scontrol ping
    fi
    if ! pid_alive slurmd; then
        /usr/sbin/slurmd -f "$SLURM_CONF"
        wait_for 30 slurmd pid_alive slurmd
    fi
    # The node may come up DOWN (e.g. after an unclean stop); ReturnToService=2 and a resume fix it.
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    wait_for 60 "an idle node" bash -c "sinfo -h -o %t | grep -qE '^(idle|mix|alloc)'"
    # slurmctld registers the cluster with slurmdbd itself; sacct works once that happened.
    wait_for 60 "sacct" bash -c "sacct -n -X -S now-1minute >/dev/null"
}

cmd_start() {
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_slurm
    log "up: source $DIR/env (SLURM_CONF=$DIR/etc/slurm.conf)"
    sinfo
}

cmd_stop() {
    local name pid
    for name in "${DAEMONS[@]}"; do
        local f="$DIR/run/$name.pid"
        [[ -s "$f" ]] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            if kill -0 "$pid" 2>/dev/null; then
                log "$name ($pid) did not stop; sending KILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$f"
    done
    log "stopped"
}

cmd_status() {
    local name rc=0
    for name in munged mariadb slurmdbd slurmctld slurmd; do
        if pid_alive "$name"; then echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
        else echo "$name: stopped"; rc=1; fi
    done
    if (( rc == 0 )); then SLURM_CONF="$DIR/etc/slurm.conf" sinfo; fi
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status   (state in \$NLBENCH_SLURM_DIR, default /tmp/nlbench-slurm)" >&2; exit 2 ;;
esac
