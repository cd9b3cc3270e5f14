#!/usr/bin/env bash
# Onebook's real local data tier, as ordinary processes under one state folder.
#
#   scripts/datatier.sh up                start (or complete) everything; idempotent; writes $STACK_DIR/endpoints.env
#   scripts/datatier.sh down              stop everything we started (by PID file only); idempotent
#   scripts/datatier.sh status            one line per service; exit 1 if anything is unhealthy
#   scripts/datatier.sh recover S N       online recovery of shard S node N (after a test killed it)
#   scripts/datatier.sh stop-node S N     pg_ctl stop -m immediate of shard S node N (for failover tests)
#   scripts/datatier.sh stop-rabbitmq     stop the broker alone (for outage tests); start-rabbitmq brings it back
#   scripts/datatier.sh mem               RSS and PSS of the stack's processes
#   scripts/datatier.sh purge             down, then delete $STACK_DIR and the socket dir
#
# Topology (defaults): per shard one pgpool-II (native replication; backends in snapshot
# isolation) over 2 PostgreSQL 15 nodes,
#   shard 1: pgpool 127.0.0.1:16432 -> 15432 (node 0), 15433 (node 1); pcp 19898
#   shard 2: pgpool 127.0.0.1:16433 -> 15434, 15435;                    pcp 19899
# memcached 11211..11214 (one per webapp/sync-server instance), RabbitMQ AMQP 5673 (dist 25673, own epmd 4370).
#
# Environment knobs: STACK_DIR (default <repo>/.stack), STACK_SHARDS (2), STACK_DB (onebook),
# STACK_PG_PORT_BASE (15432), STACK_PGPOOL_PORT_BASE (16432), STACK_PCP_PORT_BASE (19898),
# STACK_MEMCACHED_PORT_BASE (11211), STACK_MEMCACHED_COUNT (4), STACK_MEMCACHED_MB (64),
# STACK_AMQP_PORT (5673), STACK_RABBIT_DIST_PORT (25673), STACK_EPMD_PORT (4370), STACK_RABBITMQ (1; 0 = skip),
# STACK_PG_FAST (1), STACK_PGPOOL_CHILDREN (32), STACK_AUTORECOVER (1), STACK_INSTALL (0; 1 = apt-get what is missing),
# STACK_PGPOOL_DEBUG (0; 1 = log every statement per node), STACK_PGPOOL_MODE (native_replication;
# or snapshot_isolation).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"

STACK_DIR=${STACK_DIR:-$REPO_ROOT/.stack}
STACK_DIR=$(realpath -m -- "$STACK_DIR")
SHARDS=${STACK_SHARDS:-2}
DB=${STACK_DB:-onebook}
PG_PORT_BASE=${STACK_PG_PORT_BASE:-15432}
POOL_PORT_BASE=${STACK_PGPOOL_PORT_BASE:-16432}
PCP_PORT_BASE=${STACK_PCP_PORT_BASE:-19898}
MC_PORT_BASE=${STACK_MEMCACHED_PORT_BASE:-11211}
MC_COUNT=${STACK_MEMCACHED_COUNT:-4}
MC_MB=${STACK_MEMCACHED_MB:-64}
AMQP_PORT=${STACK_AMQP_PORT:-5673}
DIST_PORT=${STACK_RABBIT_DIST_PORT:-25673}
EPMD_PORT=${STACK_EPMD_PORT:-4370}
WITH_RABBIT=${STACK_RABBITMQ:-1}
PG_FAST=${STACK_PG_FAST:-1}
CHILDREN=${STACK_PGPOOL_CHILDREN:-32}
AUTORECOVER=${STACK_AUTORECOVER:-1}
POOL_DEBUG=${STACK_PGPOOL_DEBUG:-0}
POOL_MODE=${STACK_PGPOOL_MODE:-native_replication}
[[ $POOL_MODE == native_replication || $POOL_MODE == snapshot_isolation ]] ||
    { echo "datatier: STACK_PGPOOL_MODE must be native_replication or snapshot_isolation" >&2; exit 1; }
RABBIT_NODE=onebook@localhost

PG_BIN=${STACK_PG_BIN:-/usr/lib/postgresql/15/bin}
RABBIT_BIN=/usr/lib/rabbitmq/bin
# pgpool and pcp_* live in /usr/sbin, which a normal user's PATH often lacks.
export PATH="$PG_BIN:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

PCP_USER=pcpadmin
PCP_PASS=pcpadmin

LOG_DIR="$STACK_DIR/log"
PID_DIR="$STACK_DIR/pid"
PCPPASS="$STACK_DIR/pcppass"
ENDPOINTS="$STACK_DIR/endpoints.env"
# Unix sockets are limited to ~107 bytes of path and the repo may live deep down, so sockets go
# to a short per-STACK_DIR folder in /tmp (the hash keeps two checkouts from colliding).
RUN_DIR="/tmp/onebook-run-$(printf '%s' "$STACK_DIR" | sha1sum | cut -c1-8)"

# psql/pg_isready from this shell: no ~/.psqlrc, no waiting forever on a wedged server.
export PGCONNECT_TIMEOUT=3
export PCPPASSFILE="$PCPPASS"

# --- small helpers ----------------------------------------------------------------------------

die() { printf 'datatier: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'datatier: %s\n' "$*" >&2; }

now_us() { echo "${EPOCHREALTIME/./}"; }
# seconds since a now_us() stamp, one decimal
since() { local d=$(( $(now_us) - $1 )); printf '%d.%d' $((d / 1000000)) $((d % 1000000 / 100000)); }

pg_port() { echo $((PG_PORT_BASE + ($1 - 1) * 2 + $2)); }   # shard, node
pool_port() { echo $((POOL_PORT_BASE + $1 - 1)); }
pcp_port() { echo $((PCP_PORT_BASE + $1 - 1)); }
mc_port() { echo $((MC_PORT_BASE + $1 - 1)); }              # instance 1..N
node_name() { echo "s$1n$2"; }
node_dir() { echo "$STACK_DIR/pg/s$1n$2"; }

# Services run as "postgres" when we are root (PostgreSQL refuses to run as root, and one owner
# for all state keeps permissions simple); as the caller otherwise.
if [[ $EUID -eq 0 ]]; then
    RUN_USER=postgres
    # setpriv execs (no fork), so a backgrounded "setpriv ... prog &" gives the program's real PID in $!.
    RUN_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
else
    RUN_USER=$(id -un)
    RUN_AS=()
fi

# Foreground command as the run user. fd 9 is our flock: no child may keep it.
run() { HOME="$STACK_DIR/home" "${RUN_AS[@]}" "$@" 9>&-; }

# Background a long-running service in its own session, as the run user; sets SPAWNED to its PID.
# Must stay a simple command (no function or subshell in the & part), or $! would be a shell's PID.
# setsid (own session: no SIGINT/SIGHUP from the caller's terminal) does not fork here, because
# a non-interactive shell's background children are not process group leaders.
spawn() {
    local log=$1
    shift
    HOME="$STACK_DIR/home" "${RUN_AS[@]}" setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
    SPAWNED=$!
}

# PID files may hold NUL bytes (pgpool) or extra lines (postmaster.pid).
read_pid() {
    [[ -f $1 ]] || return 0
    { tr -d '\0' <"$1" | head -n1 | tr -dc '0-9'; } 2>/dev/null || true
}

# Alive = exists and is not a zombie (PID 1 here reaps late and kill -0 succeeds on zombies).
pid_alive() {
    local pid=$1 st
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # read, not $(<file): a vanished /proc entry must be a plain failure, which $(<) under set -e is not
    read -r st 2>/dev/null <"/proc/$pid/stat" || return 1
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

# PID from FILE if that process is alive and its command name is COMM (guards against PID reuse).
live_pid() {
    local pid comm
    pid=$(read_pid "$1")
    [[ -n $pid ]] && pid_alive "$pid" || return 0
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 0
    [[ $comm == "$2" ]] && echo "$pid"
    return 0
}

pg_pid() { live_pid "$(node_dir "$1" "$2")/postmaster.pid" postgres; }
pool_pid() { live_pid "$PID_DIR/pgpool-s$1.pid" pgpool; }
mc_pid() { live_pid "$PID_DIR/memcached-$1.pid" memcached; }
beam_pid() { live_pid "$PID_DIR/rabbitmq.pid" beam.smp; }
rabbit_wrapper_pid() { live_pid "$PID_DIR/rabbitmq-server.pid" rabbitmq-server; }
epmd_pid() { live_pid "$PID_DIR/epmd.pid" epmd; }

port_open() { timeout 1 bash -c ">/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Fail fast, naming the holder, if a port we are about to bind is taken by something else.
check_ports_free() {
    local p listeners holder bad=0
    listeners=$(ss -ltnpH 2>/dev/null || ss -ltnH)
    for p in "$@"; do
        holder=$(awk -v p="$p" '{ n = split($4, a, ":"); if (a[n] == p) print }' <<<"$listeners")
        if [[ -n $holder ]]; then
            say "port $p is already in use by something that is not part of this stack ($STACK_DIR):"
            printf '    %s\n' "$holder" >&2
            bad=1
        fi
    done
    [[ $bad == 0 ]] || die "free the port(s) above, or move the stack with STACK_*_PORT(_BASE) env vars"
}

pool_psql() { psql -X -q -At -F'|' -h 127.0.0.1 -p "$1" -U postgres "${@:2}"; }

# "id|status|last_status_change" per node, from SHOW POOL_NODES (simple protocol only).
pool_nodes() {
    pool_psql "$(pool_port "$1")" -d postgres -c 'SHOW POOL_NODES' 2>/dev/null |
        awk -F'|' 'NF >= 4 { print $1 "|" $4 "|" $NF }'
}
pool_node_status() { pool_nodes "$1" | awk -F'|' -v n="$2" '$1 == n { print $2 }'; }

wait_until() { # TIMEOUT_S DESCRIPTION CMD... : poll every 0.1 s
    local limit=$(($(now_us) + $1 * 1000000)) what=$2
    shift 2
    until "$@"; do
        (($(now_us) < limit)) || { say "timed out after $1 s waiting for $what"; return 1; }
        sleep 0.1
    done
}

show_log_tail() { [[ -f $1 ]] && { say "last lines of $1:"; tail -n 15 "$1" | sed 's/^/    /' >&2; }; return 0; }

# --- preparation ------------------------------------------------------------------------------

ensure_deps() {
    # shellcheck source=./deps.sh
    . "$SCRIPT_DIR/deps.sh"
    local missing
    missing=$(deps_missing datatier)
    [[ -n $missing ]] || return 0
    if [[ ${STACK_INSTALL:-0} == 1 ]]; then
        deps_ensure datatier || exit 1
    else
        die "missing packages: $(echo "$missing" | tr '\n' ' ')- run: scripts/deps.sh install datatier (or STACK_INSTALL=1)"
    fi
}

# The run user has to walk down to STACK_DIR (e.g. a repo under a 0700 home directory would
# make every server fail with a cryptic "permission denied" much later).
check_traversable() {
    [[ $EUID -eq 0 ]] || return 0
    local d=$STACK_DIR dirs=() bad
    while [[ $d != / ]]; do
        d=$(dirname "$d")
        [[ -d $d ]] && dirs+=("$d")
    done
    bad=$(run bash -c 'for d; do [[ -x $d ]] || echo "$d"; done' _ "${dirs[@]}")
    if [[ -n $bad ]]; then
        die "user $RUN_USER cannot traverse: $(echo "$bad" | tr '\n' ' ')- e.g. chmod o+x on it, or set STACK_DIR to a folder under /tmp"
    fi
}

prepare_dirs() {
    mkdir -p "$STACK_DIR"
    local d
    for d in pg pgpool rabbitmq log pid home; do
        mkdir -p "$STACK_DIR/$d"
    done
    # /tmp is shared: never adopt a folder (or symlink) someone else planted there.
    if [[ -L $RUN_DIR ]] || { [[ -e $RUN_DIR ]] && [[ $(stat -c %U "$RUN_DIR") != "$RUN_USER" && ! -O $RUN_DIR ]]; }; then
        die "$RUN_DIR exists and is a symlink or belongs to $(stat -c %U "$RUN_DIR"); remove it"
    fi
    mkdir -p "$RUN_DIR"
    if [[ $EUID -eq 0 ]]; then
        chown "$RUN_USER:" "$RUN_DIR" "$STACK_DIR"/{pg,pgpool,rabbitmq,log,pid,home}
    fi
    # The recovery scripts append to it as the run user; create it before anyone else does.
    touch "$LOG_DIR/recovery.log"
    [[ $EUID -ne 0 ]] || chown "$RUN_USER:" "$LOG_DIR/recovery.log"
    chmod 0755 "$RUN_DIR"
    chmod 0700 "$STACK_DIR/pg"
    echo "$RUN_DIR" >"$STACK_DIR/run-dir"
}

# --- PostgreSQL -------------------------------------------------------------------------------

# initdb is the slow part of a cold start, so it runs once into a template that every node
# (and any node deleted later) is copied from with cp -a.
make_template() {
    local t="$STACK_DIR/pg/template" tmp="$STACK_DIR/pg/template.tmp" out
    [[ -f $t/PG_VERSION ]] && return 0
    rm -rf "$tmp"
    run initdb -D "$tmp" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync --no-instructions \
        >"$LOG_DIR/initdb.log" 2>&1 || { show_log_tail "$LOG_DIR/initdb.log"; die "initdb failed"; }
    echo "include_if_exists = 'stack.conf'" >>"$tmp/postgresql.conf"
    # pgpool_recovery + insert_lock go into template1 *before* CREATE DATABASE, so the app database
    # and every database created later (tests) have them: online recovery and insert_lock need them.
    # Single-user mode: no server start/stop, no port.
    out=$(run postgres --single -j -D "$tmp" -c fsync=off template1 2>&1 <<'SQL'
CREATE EXTENSION IF NOT EXISTS pgpool_recovery;

CREATE SCHEMA pgpool_catalog;

CREATE TABLE pgpool_catalog.insert_lock(reloid OID PRIMARY KEY);

INSERT INTO pgpool_catalog.insert_lock VALUES (0);

GRANT USAGE ON SCHEMA pgpool_catalog TO PUBLIC;

GRANT SELECT, UPDATE, INSERT ON pgpool_catalog.insert_lock TO PUBLIC;

SQL
    )
    if grep -Eq 'ERROR|FATAL' <<<"$out"; then echo "$out" >&2; die "template1 setup failed"; fi
    out=$(printf 'CREATE DATABASE "%s";\n\n' "$DB" | run postgres --single -j -D "$tmp" -c fsync=off postgres 2>&1)
    if grep -Eq 'ERROR|FATAL' <<<"$out"; then echo "$out" >&2; die "CREATE DATABASE $DB failed"; fi
    mv "$tmp" "$t"
}

write_stack_conf() { # shard node
    local s=$1 n=$2 dir maxconn
    dir=$(node_dir "$s" "$n")
    maxconn=$((CHILDREN * 2 + 20))
    ((maxconn >= 100)) || maxconn=100
    {
        echo "# generated by scripts/datatier.sh; recovery_1st_stage.sh rewrites port and cluster_name"
        echo "port = $(pg_port "$s" "$n")"
        echo "cluster_name = '$(node_name "$s" "$n")'"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$RUN_DIR'"
        echo "max_connections = $maxconn          # pgpool children x max_pool + health checks, recovery, direct test connections"
        echo "shared_buffers = 32MB"
        echo "max_wal_senders = 5"
        echo "wal_keep_size = 64MB"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        # pgpool's snapshot_isolation mode requires REPEATABLE READ backends; native replication
        # needs READ COMMITTED, since each node would take its snapshot at a different moment
        # (docs/datatier.md, rule 2).
        if [[ $POOL_MODE == snapshot_isolation ]]; then
            echo "default_transaction_isolation = 'repeatable read'"
        else
            echo "default_transaction_isolation = 'read committed'"
        fi
        echo "pgpool.pg_ctl = '$PG_BIN/pg_ctl'"
        if [[ $PG_FAST == 1 ]]; then
            # Dev/test data is disposable, and every write pays twice (both nodes) on 2 shared cores.
            # Without fsync a write costs no disk flush. Killing a server (pg_ctl -m immediate, as the
            # failover tests do) loses nothing, since the OS still has the pages; only a host crash would,
            # and then `purge` + `up` rebuilds the stack in seconds. STACK_PG_FAST=0 restores durability.
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        fi
    } >"$dir/stack.conf"
    [[ $EUID -ne 0 ]] || chown "$RUN_USER:" "$dir/stack.conf"
}

# pgpool's online recovery runs these from the *current main* node's PGDATA (via system() in a
# backend, as the run user), and pg_basebackup copies them along, so every node carries all three.
# "Remote" start is a local pg_ctl: all nodes live on this machine.
write_recovery_scripts() { # PGDATA
    local dir=$1 f
    local head
    # shellcheck disable=SC2016  # $LOG_DIR is for the generated script
    head=$(printf '#!/bin/bash\n# generated by scripts/datatier.sh (online recovery for pgpool-II)\nset -u\nBIN=%q\nLOG_DIR=%q\nPG_ROOT=%q\nexec >>"$LOG_DIR/recovery.log" 2>&1\n' \
        "$PG_BIN" "$LOG_DIR" "$STACK_DIR/pg")
    # The backend that runs us has pgpool's client socket and its own files open; a postmaster
    # started from here would inherit and hold them for its whole life.
    # shellcheck disable=SC2016  # literal text of the generated script
    local closefds='close_fds() { local fd; for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"; done; return 0; }'

    cat >"$dir/recovery_1st_stage.sh" <<EOF
$head
$closefds
# args: main PGDATA, dest host, dest PGDATA, main port, dest node id, dest port, main host (4.3+)
MAIN_DATA=\$1 DEST_DATA=\$3 MAIN_PORT=\$4 DEST_NODE=\$5 DEST_PORT=\$6 MAIN_HOST=\${7:-127.0.0.1}
NAME=\$(basename "\$DEST_DATA")
echo "\$(date +%FT%T.%N) 1st stage: rebuild \$NAME (node \$DEST_NODE, port \$DEST_PORT) from \$MAIN_HOST:\$MAIN_PORT"
case "\$DEST_DATA" in "\$PG_ROOT"/s[0-9]*n[0-9]*) ;; *) echo "refusing to touch \$DEST_DATA"; exit 1 ;; esac
close_fds
if [ -f "\$DEST_DATA/postmaster.pid" ]; then "\$BIN/pg_ctl" -D "\$DEST_DATA" -m immediate -w stop || true; fi
# rm -rf of a fresh 46 MB cluster took 0.1-3 s here (ext4 with discard, disk shared with cargo):
# move it aside and delete it in the background instead of making the recovery wait.
if [ -e "\$DEST_DATA" ]; then
    mv "\$DEST_DATA" "\$PG_ROOT/.trash.\$NAME.\$\$" && { rm -rf "\$PG_ROOT/.trash.\$NAME.\$\$" </dev/null >/dev/null 2>&1 & }
fi
echo "\$(date +%T.%N) pg_basebackup"
"\$BIN/pg_basebackup" -h "\$MAIN_HOST" -p "\$MAIN_PORT" -U postgres -D "\$DEST_DATA" -X stream -c fast -R $([[ $PG_FAST == 1 ]] && echo --no-sync) || exit 1
sed -i -e "s/^port = .*/port = \$DEST_PORT/" -e "s/^cluster_name = .*/cluster_name = '\$NAME'/" "\$DEST_DATA/stack.conf"
echo "\$(date +%T.%N) starting as standby"
# Start as a streaming standby so it follows the writes clients make during stage 1.
"\$BIN/pg_ctl" -D "\$DEST_DATA" -l "\$LOG_DIR/\$NAME.log" -w -t 60 start || exit 1
echo "\$(date +%T.%N) 1st stage done"
EOF

    cat >"$dir/recovery_2nd_stage.sh" <<EOF
$head
MAIN_DATA=\$1 DEST_DATA=\$3 MAIN_PORT=\$4 DEST_NODE=\$5 DEST_PORT=\$6 MAIN_HOST=\${7:-127.0.0.1}
export PGCONNECT_TIMEOUT=5
M=("\$BIN/psql" -X -At -v ON_ERROR_STOP=1 -h "\$MAIN_HOST" -p "\$MAIN_PORT" -U postgres)
D=("\$BIN/psql" -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "\$DEST_PORT" -U postgres -d postgres)
echo "\$(date -Is) 2nd stage: node \$DEST_NODE"
# nextval WAL-logs 32 values ahead; a promoted standby would hand out ids up to 32 higher than the
# main node. setval writes the exact state to WAL, so both continue from the same value.
for db in \$("\${M[@]}" -d postgres -c "select datname from pg_database where datallowconn"); do
    "\${M[@]}" -d "\$db" -c "select count(setval(format('%I.%I', schemaname, sequencename)::regclass, last_value, true)) from pg_sequences where last_value is not null" >/dev/null || exit 1
done
target=\$("\${M[@]}" -d postgres -c "select pg_current_wal_lsn()") || exit 1
for _ in \$(seq 1 600); do
    [ "\$("\${D[@]}" -c "select pg_last_wal_replay_lsn() >= '\$target'::pg_lsn" 2>/dev/null)" = t ] && break
    sleep 0.1
done
"\$BIN/pg_ctl" -D "\$DEST_DATA" -w -t 60 promote || exit 1
"\${D[@]}" -c "ALTER SYSTEM RESET primary_conninfo" -c "select pg_reload_conf()" >/dev/null
echo "\$(date -Is) 2nd stage done (replayed up to \$target, promoted)"
EOF

    cat >"$dir/pgpool_remote_start" <<EOF
$head
$closefds
# args: dest host, dest PGDATA. After stage 1 the node is normally running already.
DEST_DATA=\$2
"\$BIN/pg_ctl" -D "\$DEST_DATA" status >/dev/null 2>&1 && exit 0
close_fds
"\$BIN/pg_ctl" -D "\$DEST_DATA" -l "\$LOG_DIR/\$(basename "\$DEST_DATA").log" -w -t 60 start
EOF
    for f in recovery_1st_stage.sh recovery_2nd_stage.sh pgpool_remote_start; do
        chmod 0755 "$dir/$f"
        [[ $EUID -ne 0 ]] || chown "$RUN_USER:" "$dir/$f"
    done
}

# Left by a recovery that was interrupted while deleting an old cluster in the background.
clean_trash() {
    local t
    for t in "$STACK_DIR"/pg/.trash.*; do
        # a background rm may still be at it: both racing over the files is harmless
        [[ -e $t ]] && { rm -rf -- "$t" 2>/dev/null || true; }
    done
    return 0
}

# Sets NEEDS_RECOVERY (as "s:n" words) for nodes created empty next to a sibling that has data.
prepare_nodes() {
    local s n dir had
    NEEDS_RECOVERY=""
    clean_trash
    for ((s = 1; s <= SHARDS; s++)); do
        had=()
        for n in 0 1; do
            [[ -f $(node_dir "$s" "$n")/PG_VERSION ]] && had+=("$n")
        done
        for n in 0 1; do
            dir=$(node_dir "$s" "$n")
            if [[ ! -f $dir/PG_VERSION ]]; then
                make_template
                rm -rf "$dir.tmp"
                cp -a "$STACK_DIR/pg/template" "$dir.tmp"
                mv "$dir.tmp" "$dir"
                # An empty copy next to a node with data must be rebuilt from it, not served as is.
                ((${#had[@]} == 0)) || NEEDS_RECOVERY+=" $s:$n"
            fi
            write_stack_conf "$s" "$n"
            write_recovery_scripts "$dir"
        done
    done
}

start_pg_nodes() {
    local s n dir name started=()
    for ((s = 1; s <= SHARDS; s++)); do
        for n in 0 1; do
            [[ -z $(pg_pid "$s" "$n") ]] || continue
            dir=$(node_dir "$s" "$n")
            name=$(node_name "$s" "$n")
            # A stale postmaster.pid (SIGKILLed server) is handled by postgres itself.
            # No -w: the four start in parallel and we poll them together below.
            run pg_ctl -D "$dir" -l "$LOG_DIR/$name.log" start >/dev/null
            started+=("$s:$n")
        done
    done
    local sn
    for sn in "${started[@]}"; do
        s=${sn%:*} n=${sn#*:}
        wait_until 60 "PostgreSQL $(node_name "$s" "$n")" pg_isready -q -U postgres -d postgres -h 127.0.0.1 -p "$(pg_port "$s" "$n")" -t 1 ||
            { show_log_tail "$LOG_DIR/$(node_name "$s" "$n").log"; die "PostgreSQL $(node_name "$s" "$n") did not start"; }
    done
}

# --- pgpool-II --------------------------------------------------------------------------------

write_pgpool_conf() { # shard
    local s=$1 dir="$STACK_DIR/pgpool/s$1" n
    mkdir -p "$dir/oiddir"
    {
        cat <<EOF
# generated by scripts/datatier.sh
# Native replication, every statement on both nodes, main node first. The backends run READ
# COMMITTED and the app keeps its writes to literal values and primary-key-keyed statements,
# so row locks order conflicting writers identically on both nodes (docs/datatier.md).
# STACK_PGPOOL_MODE=snapshot_isolation selects pgpool's own snapshot-isolation mode; in our
# runs (pgpool 4.3.5) its children got stuck for good in the reset query ('ABORT') after
# clients that had used the extended protocol disconnected, until no child was left.
backend_clustering_mode = '$POOL_MODE'
listen_addresses = '127.0.0.1'
port = $(pool_port "$s")
socket_dir = '$RUN_DIR'
pcp_listen_addresses = '127.0.0.1'
pcp_port = $(pcp_port "$s")
pcp_socket_dir = '$RUN_DIR'
wd_ipc_socket_dir = '$RUN_DIR'
pid_file_name = '$PID_DIR/pgpool-s$s.pid'
logdir = '$dir'
memqcache_oiddir = '$dir/oiddir'
use_watchdog = off
enable_pool_hba = off
# an empty pool_passwd file; '' makes every health check warn
pool_passwd = 'pool_passwd'
ssl = off
# = max concurrent client connections per shard; connection number 33 queues silently
num_init_children = $CHILDREN
max_pool = 2
child_life_time = 300
connection_life_time = 0
connection_cache = on
reset_query_list = 'ABORT; DISCARD ALL'
replicate_select = off
insert_lock = on
lobj_lock_table = ''
replication_stop_on_mismatch = on
failover_if_affected_tuples_mismatch = on
load_balance_mode = on
statement_level_load_balance = off
disable_load_balance_on_write = 'transaction'
read_only_function_list = ''
# both lists empty: volatile functions count as writes and go to every node
write_function_list = ''
health_check_period = 2
health_check_timeout = 5
health_check_user = 'postgres'
health_check_password = ''
health_check_database = 'postgres'
# one retry: on 2 cores shared with cargo builds a single slow connect must not detach a node;
# a really dead node refuses at once, so detection takes ~1 s longer at most
health_check_max_retries = 1
health_check_retry_delay = 1
connect_timeout = 3000
failover_on_backend_error = on
failover_on_backend_shutdown = off
# failover = detach the node; nothing to promote in this mode
failover_command = ''
failback_command = ''
sr_check_period = 0
recovery_user = 'postgres'
recovery_password = ''
recovery_1st_stage_command = 'recovery_1st_stage.sh'
recovery_2nd_stage_command = 'recovery_2nd_stage.sh'
recovery_timeout = 90
client_idle_limit_in_recovery = -1
memory_cache_enabled = off
# 4.3 allocates the query-cache shared memory even when disabled: the defaults cost 134 MB per pgpool
memqcache_total_size = 16MB
memqcache_max_num_cache = 1000
memqcache_cache_block_size = 1MB
log_destination = 'stderr'
log_line_prefix = '%m: %a pid %p: '
log_min_messages = warning
log_per_node_statement = $([[ $POOL_DEBUG == 1 ]] && echo on || echo off)
EOF
        for n in 0 1; do
            cat <<EOF
backend_hostname$n = '127.0.0.1'
backend_port$n = $(pg_port "$s" "$n")
backend_weight$n = 1
backend_data_directory$n = '$(node_dir "$s" "$n")'
backend_flag$n = 'ALLOW_TO_FAILOVER'
backend_application_name$n = '$(node_name "$s" "$n")'
EOF
        done
    } >"$dir/pgpool.conf"
    printf '%s:%s\n' "$PCP_USER" "$(printf '%s' "$PCP_PASS" | md5sum | cut -d' ' -f1)" >"$dir/pcp.conf"
    printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$dir/pool_hba.conf"
    : >>"$dir/pool_passwd"
    chmod 0600 "$dir/pool_passwd"
    [[ $EUID -ne 0 ]] || chown -R "$RUN_USER:" "$dir"
}

start_pgpools() {
    local s pid started=()
    for ((s = 1; s <= SHARDS; s++)); do
        write_pgpool_conf "$s"
        [[ -z $(pool_pid "$s") ]] || continue
        rm -f "$PID_DIR/pgpool-s$s.pid" "$RUN_DIR/.s.PGSQL.$(pool_port "$s")" "$RUN_DIR/.s.PGSQL.$(pcp_port "$s")"
        spawn "$LOG_DIR/pgpool-s$s.log" pgpool -n -f "$STACK_DIR/pgpool/s$s/pgpool.conf" \
            -F "$STACK_DIR/pgpool/s$s/pcp.conf" -a "$STACK_DIR/pgpool/s$s/pool_hba.conf"
        echo "$SPAWNED" >"$PID_DIR/pgpool-s$s.spawned"
        now_us >"$PID_DIR/pgpool-s$s.started"
        started+=("$s")
    done
    for s in "${started[@]}"; do
        pid=$(<"$PID_DIR/pgpool-s$s.spawned")
        wait_until 30 "pgpool shard $s" pool_ready "$s" "$pid" ||
            { show_log_tail "$LOG_DIR/pgpool-s$s.log"; die "pgpool of shard $s did not start"; }
        # The pid file must name the process we started: that is what `down` will signal.
        [[ $(pool_pid "$s") == "$pid" ]] || die "pgpool shard $s: pid file says '$(pool_pid "$s")', started $pid"
    done
    # A node stays "waiting" until the first session uses it.
    for ((s = 1; s <= SHARDS; s++)); do
        pool_psql "$(pool_port "$s")" -d "$DB" -c 'select 1' >/dev/null || die "select 1 through pgpool shard $s failed"
    done
}

pool_ready() { # shard spawned-pid
    pid_alive "$2" || { show_log_tail "$LOG_DIR/pgpool-s$1.log"; die "pgpool of shard $1 exited"; }
    [[ -n $(pool_pid "$1") ]] && pool_psql "$(pool_port "$1")" -d postgres -c 'SHOW POOL_NODES' >/dev/null 2>&1
}

pcp() { # command shard args...
    local c=$1 s=$2
    shift 2
    "pcp_$c" -h 127.0.0.1 -p "$(pcp_port "$s")" -U "$PCP_USER" -w "$@"
}

write_pcppass() {
    (umask 077 && printf '*:*:%s:%s\n' "$PCP_USER" "$PCP_PASS" >"$PCPPASS")
}

node_attached() { local st; st=$(pool_node_status "$1" "$2"); [[ $st == up || $st == waiting ]]; }
node_detached() { [[ $(pool_node_status "$1" "$2") == down ]]; }

# Online recovery of one node: detach if attached, rebuild from the main node, reattach.
recover_node() { # shard node
    local s=$1 n=$2 st t0 changed wait_s started
    t0=$(now_us)
    [[ -n $(pool_pid "$s") ]] || die "pgpool of shard $s is not running (run: $SELF up)"
    st=$(pool_node_status "$s" "$n")
    [[ -n $st ]] || die "shard $s has no node $n (or pgpool does not answer)"
    if [[ $st == up || $st == waiting ]]; then
        # pcp_recovery_node refuses an attached node ("node id: N is alive").
        say "shard $s node $n is $st: detaching it first"
        changed=$(now_us)
        pcp detach_node "$s" -n "$n" >/dev/null || die "pcp_detach_node shard $s node $n failed"
        wait_until 30 "shard $s node $n to be detached" node_detached "$s" "$n" || die "node not detached"
    else
        # failed over earlier: SHOW POOL_NODES has the time, to the second (hence +1 s)
        changed=$(pool_nodes "$s" | awk -F'|' -v n="$n" '$1 == n { print $3 }')
        changed=$(($(date -d "$changed" +%s 2>/dev/null || echo 0) + 1))000000
    fi
    # About 1 s after a failover pgpool restarts its PCP process; a recovery request that comes
    # before that waits 5 s more ("waiting for wake up request is timeout"). So let 2 s pass since
    # the failover, and since pgpool started.
    started=$(cat "$PID_DIR/pgpool-s$s.started" 2>/dev/null || echo 0)
    ((started > changed)) && changed=$started
    wait_s=$(((changed + 2000000 - $(now_us)) / 1000))
    if ((wait_s > 0)); then sleep "$((wait_s / 1000)).$(printf '%03d' $((wait_s % 1000)))"; fi
    say "recovering shard $s node $n (pcp_recovery_node; log: $LOG_DIR/recovery.log)"
    if ! pcp recovery_node "$s" -n "$n" >>"$LOG_DIR/recovery.log" 2>&1; then
        show_log_tail "$LOG_DIR/recovery.log"
        show_log_tail "$LOG_DIR/pgpool-s$s.log"
        die "pcp_recovery_node shard $s node $n failed"
    fi
    wait_until 60 "shard $s node $n to be attached" node_attached "$s" "$n" || die "node not attached after recovery"
    # Failback restarts pgpool's children; the first session turns the node from waiting to up.
    wait_until 10 "a session through pgpool shard $s" pool_psql "$(pool_port "$s")" -d "$DB" -c 'select 1' >/dev/null 2>&1 || true
    say "shard $s node $n recovered in $(since "$t0") s: $(pool_node_status "$s" "$n")"
}

auto_recover() {
    [[ $AUTORECOVER == 1 ]] || return 0
    local s n todo=$NEEDS_RECOVERY
    for ((s = 1; s <= SHARDS; s++)); do
        for n in 0 1; do
            # pgpool_status remembers nodes that were down when pgpool last stopped.
            [[ $(pool_node_status "$s" "$n") == down && " $todo " != *" $s:$n "* ]] && todo+=" $s:$n"
        done
    done
    local sn
    for sn in $todo; do
        say "shard ${sn%:*} node ${sn#*:} is down or new: online recovery"
        recover_node "${sn%:*}" "${sn#*:}"
    done
}

# --- memcached --------------------------------------------------------------------------------

start_memcached() {
    local i
    for ((i = 1; i <= MC_COUNT; i++)); do
        [[ -z $(mc_pid "$i") ]] || continue
        rm -f "$PID_DIR/memcached-$i.pid"
        # -d: memcached daemonizes, calls setsid and writes the daemon's PID to -P.
        run memcached -d -l 127.0.0.1 -p "$(mc_port "$i")" -U 0 -m "$MC_MB" -c 1024 -P "$PID_DIR/memcached-$i.pid" \
            </dev/null >>"$LOG_DIR/memcached-$i.log" 2>&1 || die "memcached $i failed to start"
    done
    for ((i = 1; i <= MC_COUNT; i++)); do
        wait_until 10 "memcached $i" mc_healthy "$i" || { show_log_tail "$LOG_DIR/memcached-$i.log"; die "memcached $i not answering"; }
    done
}

mc_healthy() {
    [[ -n $(mc_pid "$1") ]] || return 1
    # shellcheck disable=SC2016  # the inner bash expands $1
    timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "version\r\n" >&3; read -r l <&3; [[ $l == VERSION* ]]' _ "$(mc_port "$1")" 2>/dev/null
}

# --- RabbitMQ ---------------------------------------------------------------------------------

RABBIT_DIR="$STACK_DIR/rabbitmq"
RABBIT_LOG="$RABBIT_DIR/log/$RABBIT_NODE.log"

# The node and its CLI tools need the same environment (HOME holds the Erlang cookie).
rabbit_env() {
    echo "HOME=$RABBIT_DIR/home"
    echo "RABBITMQ_NODENAME=$RABBIT_NODE"
    echo "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
    echo "RABBITMQ_NODE_PORT=$AMQP_PORT"
    echo "RABBITMQ_DIST_PORT=$DIST_PORT"
    # own epmd: the system one on 4369 (if any) is left alone, and ours dies with the stack
    echo "ERL_EPMD_PORT=$EPMD_PORT"
    echo "ERL_EPMD_ADDRESS=127.0.0.1"
    echo "RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia"
    echo "RABBITMQ_LOG_BASE=$RABBIT_DIR/log"
    echo "RABBITMQ_PID_FILE=$PID_DIR/rabbitmq.pid"
    # empty, so /etc/rabbitmq/rabbitmq-env.conf is not read
    echo "RABBITMQ_CONF_ENV_FILE=$RABBIT_DIR/rabbitmq-env.conf"
    echo "RABBITMQ_CONFIG_FILE=$RABBIT_DIR/rabbitmq.conf"
    echo "RABBITMQ_ADVANCED_CONFIG_FILE=$RABBIT_DIR/advanced.config"
    echo "RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins"
    echo "ERL_CRASH_DUMP=$LOG_DIR/erl_crash.dump"
    # no scheduler busy-waiting on a shared 2-core box; Erlang distribution on loopback only
    echo "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=+sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}"
}

write_rabbit_conf() {
    mkdir -p "$RABBIT_DIR"/{home,mnesia,log}
    : >"$RABBIT_DIR/rabbitmq-env.conf"
    # '[].' and not an empty file: an empty advanced.config crashes the boot
    echo '[].' >"$RABBIT_DIR/advanced.config"
    echo '[].' >"$RABBIT_DIR/enabled_plugins"
    cat >"$RABBIT_DIR/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.file.level = info
log.console = false
EOF
    [[ $EUID -ne 0 ]] || chown -R "$RUN_USER:" "$RABBIT_DIR"
}

start_rabbit() {
    [[ $WITH_RABBIT == 1 ]] || return 0
    if [[ -z $(epmd_pid) ]]; then
        spawn "$LOG_DIR/epmd.log" epmd -port "$EPMD_PORT" -address 127.0.0.1
        echo "$SPAWNED" >"$PID_DIR/epmd.pid"
        wait_until 10 "epmd" port_open "$EPMD_PORT" || { show_log_tail "$LOG_DIR/epmd.log"; die "epmd did not start"; }
    fi
    [[ -z $(beam_pid) ]] || return 0
    # An orphaned wrapper (beam gone) would just sit there.
    local w
    w=$(rabbit_wrapper_pid)
    [[ -z $w ]] || { kill "$w" 2>/dev/null || true; }
    write_rabbit_conf
    rm -f "$PID_DIR/rabbitmq.pid"
    # readiness looks only at this boot's part of the log
    stat -c %s "$RABBIT_LOG" 2>/dev/null >"$PID_DIR/rabbitmq.logoffset" || echo 0 >"$PID_DIR/rabbitmq.logoffset"
    local envs=()
    mapfile -t envs < <(rabbit_env)
    # NOTIFY_SOCKET would make the wrapper think it runs under systemd.
    spawn "$LOG_DIR/rabbitmq-stdout.log" env -u NOTIFY_SOCKET "${envs[@]}" "$RABBIT_BIN/rabbitmq-server"
    echo "$SPAWNED" >"$PID_DIR/rabbitmq-server.pid"
}

rabbit_healthy() {
    local off
    [[ -n $(beam_pid) ]] || return 1
    port_open "$AMQP_PORT" || return 1
    off=$(cat "$PID_DIR/rabbitmq.logoffset" 2>/dev/null || echo 0)
    tail -c +"$((off + 1))" "$RABBIT_LOG" 2>/dev/null | grep -q 'Server startup complete'
}

rabbit_gone() { [[ -z $(beam_pid) && -z $(rabbit_wrapper_pid) ]] && ! port_open "$AMQP_PORT"; }
rabbit_gone_or_healthy() { rabbit_gone || rabbit_healthy; }

rabbit_alive_or_die() {
    [[ -n $(rabbit_wrapper_pid) || -n $(beam_pid) ]] && return 0
    show_log_tail "$LOG_DIR/rabbitmq-stdout.log"
    show_log_tail "$RABBIT_LOG"
    die "RabbitMQ exited during boot"
}
rabbit_ready() { rabbit_alive_or_die && rabbit_healthy; }

wait_rabbit() {
    [[ $WITH_RABBIT == 1 ]] || return 0
    wait_until 90 "RabbitMQ" rabbit_ready || { show_log_tail "$RABBIT_LOG"; die "RabbitMQ did not become ready"; }
}

# --- endpoints --------------------------------------------------------------------------------

env_line() { # KEY VALUE: unquoted when safe, so that dotenv parsers read it too
    if [[ $2 =~ ^[A-Za-z0-9_@%+=:,./-]*$ ]]; then
        printf '%s=%s\n' "$1" "$2"
    else
        printf "%s='%s'\n" "$1" "${2//\'/\'\\\'\'}"
    fi
}

join_by() { local IFS=$1; shift; echo "$*"; }

write_endpoints() {
    local s n i urls=() pcps=() mcs=() nodes tmp="$ENDPOINTS.tmp"
    for ((s = 1; s <= SHARDS; s++)); do
        urls+=("postgres://postgres@127.0.0.1:$(pool_port "$s")/$DB")
        pcps+=("$(pcp_port "$s")")
    done
    for ((i = 1; i <= MC_COUNT; i++)); do mcs+=("127.0.0.1:$(mc_port "$i")"); done
    {
        echo "# written by scripts/datatier.sh up at $(date -u +%FT%TZ); source with: set -a; . $ENDPOINTS; set +a"
        env_line ONEBOOK_STACK_DIR "$STACK_DIR"
        env_line ONEBOOK_RUN_DIR "$RUN_DIR"
        env_line ONEBOOK_DATATIER "$SELF"
        env_line ONEBOOK_DB "$DB"
        env_line ONEBOOK_SHARD_COUNT "$SHARDS"
        env_line ONEBOOK_SHARD_URLS "$(join_by , "${urls[@]}")"
        for ((s = 1; s <= SHARDS; s++)); do
            nodes=()
            for n in 0 1; do nodes+=("postgres://postgres@127.0.0.1:$(pg_port "$s" "$n")/$DB"); done
            env_line "ONEBOOK_SHARD${s}_NODES" "$(join_by , "${nodes[@]}")"
        done
        env_line ONEBOOK_PCP_PORTS "$(join_by , "${pcps[@]}")"
        env_line ONEBOOK_PCP_USER "$PCP_USER"
        env_line ONEBOOK_PCPPASSFILE "$PCPPASS"
        env_line PCPPASSFILE "$PCPPASS"
        env_line ONEBOOK_MEMCACHED "$(join_by , "${mcs[@]}")"
        if [[ $WITH_RABBIT == 1 ]]; then
            env_line ONEBOOK_AMQP_URL "amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
        fi
    } >"$tmp"
    mv "$tmp" "$ENDPOINTS"
}

# --- commands ---------------------------------------------------------------------------------

take_lock() {
    mkdir -p "$STACK_DIR"
    exec 9>"$STACK_DIR/.lock"
    flock -w 300 9 || die "another datatier.sh holds $STACK_DIR/.lock"
}

cmd_up() {
    local t0 t_pg t_pool t_mc t_rabbit s n i ports=()
    t0=$(now_us)
    ensure_deps
    check_traversable
    take_lock
    prepare_dirs
    write_pcppass
    cd "$STACK_DIR"

    # Ports of everything not already running must be free.
    for ((s = 1; s <= SHARDS; s++)); do
        for n in 0 1; do [[ -n $(pg_pid "$s" "$n") ]] || ports+=("$(pg_port "$s" "$n")"); done
        [[ -n $(pool_pid "$s") ]] || ports+=("$(pool_port "$s")" "$(pcp_port "$s")")
    done
    for ((i = 1; i <= MC_COUNT; i++)); do [[ -n $(mc_pid "$i") ]] || ports+=("$(mc_port "$i")"); done
    if [[ $WITH_RABBIT == 1 ]]; then
        [[ -n $(epmd_pid) ]] || ports+=("$EPMD_PORT")
        [[ -n $(beam_pid) ]] || ports+=("$AMQP_PORT" "$DIST_PORT")
    fi
    ((${#ports[@]} == 0)) || check_ports_free "${ports[@]}"

    # RabbitMQ boots slowest (3-8 s), so it goes first and boots while PostgreSQL starts.
    start_rabbit
    t_mc=$(now_us)
    start_memcached
    t_mc=$(since "$t_mc")
    t_pg=$(now_us)
    NEEDS_RECOVERY=""
    prepare_nodes
    start_pg_nodes
    t_pg=$(since "$t_pg")
    t_pool=$(now_us)
    start_pgpools
    auto_recover
    t_pool=$(since "$t_pool")
    t_rabbit=$(now_us)
    wait_rabbit
    t_rabbit=$(since "$t_rabbit")
    write_endpoints

    echo "datatier up in $(since "$t0") s (PostgreSQL $t_pg s, pgpool $t_pool s, memcached $t_mc s, RabbitMQ extra wait $t_rabbit s)"
    echo "  shards:    $(grep '^ONEBOOK_SHARD_URLS=' "$ENDPOINTS" | cut -d= -f2-)"
    echo "  memcached: $(grep '^ONEBOOK_MEMCACHED=' "$ENDPOINTS" | cut -d= -f2-)"
    [[ $WITH_RABBIT != 1 ]] || echo "  amqp:      amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
    echo "  env:       set -a; . $ENDPOINTS; set +a"
}

# "pid ppid-root" for ROOT... and all their descendants. Sessions would not do: every PostgreSQL
# backend and some Erlang helpers call setsid() themselves.
proc_tree() {
    (($# > 0)) || return 0
    ps -e -o pid=,ppid= | awk -v roots=" $* " '
        { par[$1] = $2; pid[NR] = $1 }
        END {
            for (i = 1; i <= NR; i++) {
                q = pid[i]
                while (q > 1) {
                    if (index(roots, " " q " ")) { print pid[i], q; break }
                    q = par[q]
                }
            }
        }'
}

start_time() {
    local st
    read -r st 2>/dev/null <"/proc/$1/stat" || return 0
    st=${st##*) }
    read -ra st <<<"$st"
    echo "${st[19]}"
}

# stop_procs TIMEOUT SIG:PID... : signal the leaders, wait for them, then make sure nothing of their
# process trees (snapshotted before the signal, checked by start time against PID reuse) survives.
stop_procs() {
    local timeout=$1 sp pid p t
    shift
    local roots=() snap=()
    for sp in "$@"; do [[ -n ${sp#*:} ]] && roots+=("${sp#*:}"); done
    ((${#roots[@]} > 0)) || return 0
    while read -r p _; do snap+=("$p:$(start_time "$p")"); done < <(proc_tree "${roots[@]}")
    for sp in "$@"; do
        [[ -n ${sp#*:} ]] && { kill -s "${sp%%:*}" "${sp#*:}" 2>/dev/null || true; }
    done
    local limit=$(($(now_us) + timeout * 1000000)) left
    while :; do
        left=()
        for p in "${roots[@]}"; do pid_alive "$p" && left+=("$p"); done
        ((${#left[@]} > 0)) || break
        if (($(now_us) > limit)); then
            say "still running after $timeout s, sending SIGKILL: ${left[*]}"
            kill -9 "${left[@]}" 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    # Leaders normally reap their children before exiting; give stragglers 2 s, then SIGKILL.
    limit=$(($(now_us) + 2000000))
    while :; do
        left=()
        for sp in "${snap[@]}"; do
            pid=${sp%%:*} t=${sp#*:}
            pid_alive "$pid" && [[ $(start_time "$pid") == "$t" ]] && left+=("$pid")
        done
        ((${#left[@]} > 0)) || break
        if (($(now_us) > limit)); then
            say "killing leftovers: ${left[*]}"
            kill -9 "${left[@]}" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.05
    done
}

cmd_down() {
    local t0 s n i
    t0=$(now_us)
    [[ -d $STACK_DIR ]] || { echo "datatier: nothing at $STACK_DIR"; return 0; }
    take_lock
    # pgpool first: stopping PostgreSQL under a running pgpool makes it fail the nodes over and
    # remember them as down in pgpool_status, which would force a recovery at the next `up`.
    local first=() rest=()
    for ((s = 1; s <= SHARDS; s++)); do first+=("INT:$(pool_pid "$s")"); done # INT = fast shutdown
    stop_procs 20 "${first[@]}"
    for ((s = 1; s <= SHARDS; s++)); do
        for n in 0 1; do rest+=("INT:$(pg_pid "$s" "$n")"); done # INT = fast shutdown
    done
    for ((i = 1; i <= MC_COUNT; i++)); do rest+=("TERM:$(mc_pid "$i")"); done
    # beam stops in order on TERM (~1.2 s); the wrapper script exits when beam does.
    rest+=("TERM:$(beam_pid)" "TERM:$(rabbit_wrapper_pid)")
    stop_procs 30 "${rest[@]}"
    # epmd last: beam unregisters from it while stopping.
    stop_procs 5 "TERM:$(epmd_pid)"
    rm -f "$PID_DIR"/*.pid "$PID_DIR"/*.spawned
    # so that nobody mistakes a stopped stack for a running one
    rm -f "$ENDPOINTS"
    echo "datatier down in $(since "$t0") s"
}

cmd_status() {
    local bad=0 s n i pid st nodes line
    printf '%-10s %-18s %-22s %-8s %s\n' SERVICE NAME ADDRESS PID HEALTH
    row() { printf '%-10s %-18s %-22s %-8s %s\n' "$@"; }
    for ((s = 1; s <= SHARDS; s++)); do
        for n in 0 1; do
            pid=$(pg_pid "$s" "$n")
            if pg_isready -q -U postgres -d postgres -h 127.0.0.1 -p "$(pg_port "$s" "$n")" -t 2 && [[ -n $pid ]]; then st=ok; else st=DOWN; bad=1; fi
            row postgres "$(node_name "$s" "$n")" "127.0.0.1:$(pg_port "$s" "$n")" "${pid:--}" "$st"
        done
        pid=$(pool_pid "$s")
        nodes=$(pool_nodes "$s" || true)
        if [[ -n $pid && -n $nodes ]]; then
            st=ok
            line=""
            while IFS='|' read -r n i _; do
                line+=" node$n=$i"
                [[ $i == up || $i == waiting ]] || { st=DEGRADED; bad=1; }
            done <<<"$nodes"
            st="$st${line}"
        else
            st=DOWN
            bad=1
        fi
        row pgpool "shard$s" "127.0.0.1:$(pool_port "$s")" "${pid:--}" "$st (pcp 127.0.0.1:$(pcp_port "$s"))"
    done
    for ((i = 1; i <= MC_COUNT; i++)); do
        pid=$(mc_pid "$i")
        if mc_healthy "$i"; then st=ok; else st=DOWN; bad=1; fi
        row memcached "mc$i" "127.0.0.1:$(mc_port "$i")" "${pid:--}" "$st"
    done
    if [[ $WITH_RABBIT == 1 ]]; then
        pid=$(beam_pid)
        if rabbit_healthy; then st=ok; else st=DOWN; bad=1; fi
        row rabbitmq "$RABBIT_NODE" "127.0.0.1:$AMQP_PORT" "${pid:--}" "$st"
        pid=$(epmd_pid)
        if [[ -n $pid ]] && port_open "$EPMD_PORT"; then st=ok; else st=DOWN; bad=1; fi
        row epmd "" "127.0.0.1:$EPMD_PORT" "${pid:--}" "$st"
    fi
    return "$bad"
}

check_shard_node() {
    [[ ${1:-} =~ ^[0-9]+$ && $1 -ge 1 && $1 -le $SHARDS && ${2:-} =~ ^[01]$ ]] ||
        die "usage: $(basename "$0") ${CMD} SHARD(1..$SHARDS) NODE(0|1)"
}

cmd_recover() {
    check_shard_node "$@"
    take_lock
    [[ -f $PCPPASS ]] || write_pcppass
    touch "$LOG_DIR/recovery.log"
    [[ $EUID -ne 0 ]] || chown "$RUN_USER:" "$LOG_DIR/recovery.log"
    recover_node "$1" "$2"
}

cmd_stop_node() {
    check_shard_node "$@"
    local dir
    dir=$(node_dir "$1" "$2")
    [[ -n $(pg_pid "$1" "$2") ]] || { echo "datatier: $(node_name "$1" "$2") is not running"; return 0; }
    cd "$STACK_DIR"
    run pg_ctl -D "$dir" -m immediate -w stop >/dev/null
    echo "datatier: stopped $(node_name "$1" "$2") (port $(pg_port "$1" "$2")) with -m immediate"
}

# A broker outage for tests: the node stops in order (messages on disk survive), epmd stays.
cmd_stop_rabbitmq() {
    [[ $WITH_RABBIT == 1 ]] || die "RabbitMQ is disabled (STACK_RABBITMQ=0)"
    take_lock
    stop_procs 30 "TERM:$(beam_pid)" "TERM:$(rabbit_wrapper_pid)"
    # The wrapper can exit before beam has closed its listener; a start right after
    # would find the old node still shutting down.
    wait_until 30 "RabbitMQ to stop" rabbit_gone || die "RabbitMQ did not stop"
    echo "datatier: RabbitMQ stopped"
}

cmd_start_rabbitmq() {
    [[ $WITH_RABBIT == 1 ]] || die "RabbitMQ is disabled (STACK_RABBITMQ=0)"
    take_lock
    wait_until 30 "the previous RabbitMQ to stop" rabbit_gone_or_healthy || die "an old RabbitMQ node is still stopping"
    # Right after a stop, a new node sometimes dies at once in its Erlang boot (the old
    # node's epmd registration lingers); a second attempt a moment later boots fine.
    local attempt
    for attempt in 1 2 3; do
        if (start_rabbit && wait_rabbit); then
            echo "datatier: RabbitMQ ready on 127.0.0.1:$AMQP_PORT"
            return 0
        fi
        say "RabbitMQ start attempt $attempt failed; retrying"
        sleep 2
    done
    die "RabbitMQ did not start (log: $RABBIT_LOG)"
}

# RSS counts shared pages (pgpool's and PostgreSQL's shared memory) once per process; PSS splits
# them fairly, so the PSS total is what the stack really costs.
cmd_mem() {
    local s n i p root comp roots=()
    declare -A comp_of=()
    add() { [[ -n $2 ]] && { roots+=("$2"); comp_of[$2]=$1; }; return 0; }
    for ((s = 1; s <= SHARDS; s++)); do
        add pgpool "$(pool_pid "$s")"
        for n in 0 1; do add postgresql "$(pg_pid "$s" "$n")"; done
    done
    for ((i = 1; i <= MC_COUNT; i++)); do add memcached "$(mc_pid "$i")"; done
    add rabbitmq "$(rabbit_wrapper_pid)"
    add rabbitmq "$(beam_pid)"
    add rabbitmq "$(epmd_pid)"
    ((${#roots[@]} > 0)) || { echo "nothing running"; return 0; }
    proc_tree "${roots[@]}" |
        while read -r p root; do
            comp=${comp_of[$root]}
            awk -v c="$comp" '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } END { if (r != "") print c, r, p }' "/proc/$p/smaps_rollup" 2>/dev/null || true
        done |
        awk '{ n[$1]++; r[$1] += $2; p[$1] += $3; N++; R += $2; P += $3 }
             END { printf "%-12s %6s %9s %9s\n", "component", "procs", "RSS MiB", "PSS MiB"
                   for (k in n) printf "%-12s %6d %9.0f %9.0f\n", k, n[k], r[k] / 1024, p[k] / 1024
                   printf "%-12s %6d %9.0f %9.0f\n", "total", N, R / 1024, P / 1024 }'
}

cmd_purge() {
    cmd_down
    rm -rf -- "$STACK_DIR" "$RUN_DIR"
    echo "datatier: removed $STACK_DIR and $RUN_DIR"
}

CMD=${1:-}
shift || true
case "$CMD" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    recover) cmd_recover "$@" ;;
    stop-node) cmd_stop_node "$@" ;;
    stop-rabbitmq) cmd_stop_rabbitmq ;;
    start-rabbitmq) cmd_start_rabbitmq ;;
    mem) cmd_mem ;;
    purge) cmd_purge ;;
    -h | --help | help) sed -n '2,25p' "$0" ;;
    *)
        echo "usage: $(basename "$0") up|down|status|recover SHARD NODE|stop-node SHARD NODE|mem|purge" >&2
        exit 2
        ;;
esac
