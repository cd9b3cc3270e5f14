#!/usr/bin/env bash
# System packages the project needs, by group (Debian 12).
#
#   scripts/deps.sh install [GROUP...]   install what is missing (default group: datatier build)
#   scripts/deps.sh check   [GROUP...]   exit 1 and list what is missing, install nothing
#   scripts/deps.sh list                 show the groups
#
# Or source it and call `deps_ensure datatier build` (returns non-zero instead of exiting).
#
# To add a group: add one line to DEPS_GROUPS. If one of its packages ships a daemon that
# would fight over a port with something we run ourselves, add it to DEPS_SERVICES too.

# Only the executed form gets strict mode: a sourced file must not change the caller's shell.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
fi

declare -gA DEPS_GROUPS=(
    # PostgreSQL 15 + pgpool-II; postgresql-15-pgpool2 carries the pgpool_recovery extension
    # that online recovery needs (the pgpool2 package alone does not).
    [datatier]="postgresql-15 postgresql-15-pgpool2 pgpool2 memcached rabbitmq-server postgresql-client-15"
    # cmake: Pingora builds zlib-ng from source.
    [build]="cmake pkg-config build-essential curl ca-certificates jq"
    [syncml]="syncevolution"
    # benches/syncml: SyncEvolution's own libsynthesis SyncML server as the reference peer
    # (its Python front end needs twisted, which the package does not pull in).
    [syncml-ref]="syncevolution syncevolution-http python3-twisted dbus-daemon"
    [browser]="chromium chromium-driver"
    # h2load lives in nghttp2-client.
    [bench]="wrk nginx haproxy nghttp2-client"
)

# Package -> system units its postinst enables. We run our own instances as plain processes,
# so on a systemd host we disable these right after *we* install them (boot would otherwise
# start a second memcached on 11211, a cluster on 5432, ...). Packages that were already
# installed are the owner's business and are never touched.
declare -gA DEPS_SERVICES=(
    [postgresql-15]="postgresql.service"
    [memcached]="memcached.service"
    [rabbitmq-server]="rabbitmq-server.service"
    [pgpool2]="pgpool2.service"
    [nginx]="nginx.service"
    [haproxy]="haproxy.service"
)

DEPS_DEFAULT_GROUPS=(datatier build)
DEPS_POLICY_RC=/usr/sbin/policy-rc.d

deps_log() { printf 'deps: %s\n' "$*" >&2; }

# Print the packages of GROUP..., one per line, deduplicated.
deps_packages() {
    local g
    for g in "$@"; do
        if [[ -z "${DEPS_GROUPS[$g]+x}" ]]; then
            deps_log "unknown group '$g' (known: ${!DEPS_GROUPS[*]})"
            return 2
        fi
        # shellcheck disable=SC2086  # the group is a space-separated list on purpose
        printf '%s\n' ${DEPS_GROUPS[$g]}
    done | awk '!seen[$0]++'
}

# Print the packages of GROUP... that are not installed. dpkg-query alone: it answers in
# milliseconds, so callers can run this on every invocation.
deps_missing() {
    local pkgs p status
    pkgs=$(deps_packages "$@") || return
    for p in $pkgs; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        # "ii " = installed and configured; anything else (absent, half-configured, rc) counts as missing.
        [[ "$status" == ii* ]] || printf '%s\n' "$p"
    done
}

_deps_lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

# Runs in a subshell so the EXIT trap (removing our policy-rc.d) cannot leak into a caller
# that sourced us, and fires even on errors or Ctrl-C.
_deps_apt_install() (
    set -euo pipefail
    local out rc
    # Postinst scripts call invoke-rc.d, which asks policy-rc.d; exit 101 = "action forbidden".
    # Without it, installing postgresql-15 starts cluster "main" on 5432, rabbitmq-server starts
    # epmd on 4369 and a node on 5672, and memcached takes 11211: the port our own memcached uses.
    # An existing policy-rc.d (e.g. Docker's, which already denies everything) is left alone.
    if [[ ! -e "$DEPS_POLICY_RC" ]]; then
        printf '#!/bin/sh\n# temporary, created by onebook scripts/deps.sh\nexit 101\n' >"$DEPS_POLICY_RC"
        chmod 0755 "$DEPS_POLICY_RC"
        # shellcheck disable=SC2064  # expand the path now
        trap "rm -f '$DEPS_POLICY_RC'" EXIT
    fi

    # Another apt/dpkg run (unattended-upgrades, a parallel job) holds the lock: wait, don't fail.
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
    if ! _deps_lists_present; then
        deps_log "no apt lists yet: apt-get update"
        "${apt[@]}" update -qq
    fi
    out=$(mktemp)
    set +e
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    if [[ $rc != 0 ]] && grep -Eq 'Unable to locate package|has no installation candidate|404 +Not Found|Failed to fetch' "$out"; then
        # Stale lists (package renamed, or a security update replaced the pinned .deb): refresh once.
        deps_log "apt lists look stale: apt-get update, then retry"
        "${apt[@]}" update -qq
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$@"
        rc=$?
    fi
    rm -f "$out"
    return "$rc"
)

# Disable units of packages we just installed, only where systemd is really running
# (in containers there is no systemd and policy-rc.d was all that was needed).
_deps_disable_services() {
    [[ -d /run/systemd/system ]] || return 0
    local p u
    for p in "$@"; do
        for u in ${DEPS_SERVICES[$p]:-}; do
            deps_log "disabling system unit $u (we run our own instances)"
            systemctl disable --now "$u" >/dev/null 2>&1 || true
        done
    done
}

# Make sure every package of GROUP... is installed. No apt call at all when nothing is missing.
deps_ensure() {
    local missing
    [[ $# -gt 0 ]] || set -- "${DEPS_DEFAULT_GROUPS[@]}"
    missing=$(deps_missing "$@") || return
    [[ -n "$missing" ]] || return 0
    # shellcheck disable=SC2206  # word-splitting the newline-separated list is intended
    local pkgs=($missing)
    if [[ $EUID -ne 0 ]]; then
        deps_log "missing packages for group(s) $*: ${pkgs[*]}"
        deps_log "not root, so not installing them. Run:"
        printf '  sudo apt-get install -y --no-install-recommends %s\n' "${pkgs[*]}" >&2
        return 1
    fi
    deps_log "installing ${pkgs[*]}"
    _deps_apt_install "${pkgs[@]}" || { deps_log "apt-get install failed"; return 1; }
    _deps_disable_services "${pkgs[@]}"
    missing=$(deps_missing "$@")
    if [[ -n "$missing" ]]; then
        deps_log "still missing after install: $(echo "$missing" | tr '\n' ' ')"
        return 1
    fi
}

_deps_main() {
    local cmd=${1:-install}
    shift || true
    case "$cmd" in
        install) deps_ensure "$@" ;;
        check)
            [[ $# -gt 0 ]] || set -- "${DEPS_DEFAULT_GROUPS[@]}"
            local m
            m=$(deps_missing "$@")
            if [[ -n "$m" ]]; then
                echo "missing: $(echo "$m" | tr '\n' ' ')"
                return 1
            fi
            echo "all present: $*"
            ;;
        list)
            local g
            for g in $(printf '%s\n' "${!DEPS_GROUPS[@]}" | sort); do
                printf '%-10s %s\n' "$g" "${DEPS_GROUPS[$g]}"
            done
            ;;
        -h | --help | help) sed -n '2,12p' "${BASH_SOURCE[0]}" ;;
        *)
            echo "usage: $0 install|check|list [GROUP...]" >&2
            return 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    _deps_main "$@"
fi
