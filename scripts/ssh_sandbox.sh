#!/bin/sh
# ssh_sandbox.sh: sandboxes on a pool of SSH hosts for Offload's `default` provider.
#
# Each sandbox is a private copy of the project in a directory of its own on one of the
# hosts. Offload bundles this script; refer to it as `@ssh_sandbox.sh`:
#
#   [provider]
#   type = "default"
#   prepare_command  = "@ssh_sandbox.sh prepare"
#   create_command   = "@ssh_sandbox.sh create {image_id}"
#   exec_command     = "@ssh_sandbox.sh exec {sandbox_id} {command}"
#   download_command = "@ssh_sandbox.sh download {sandbox_id} {paths}"
#   destroy_command  = "@ssh_sandbox.sh destroy {sandbox_id}"
#
# Hosts: OFFLOAD_SSH_HOSTS (or `--hosts LIST` after `prepare` or `create`), entries
# `[user@]host[:port][/slots]` separated by spaces, commas or newlines; slots (default
# 1) is how many sandboxes the host runs at once. Every ssh and rsync call uses the
# user's own ssh configuration (~/.ssh/config: keys, ProxyJump, ControlMaster), plus
# the words of OFFLOAD_SSH_OPTIONS (e.g. `-F ./ssh_config -i key`), plus
# `-o BatchMode=yes -o ConnectTimeout=$OFFLOAD_SSH_CONNECT_TIMEOUT` (default 10 s).
#
# Subcommands:
#   prepare     Syncs the build context (OFFLOAD_CONTEXT_DIR, default `.`; in a git work
#               tree its tracked and untracked-but-not-ignored files) plus the copy dirs
#               (OFFLOAD_COPY_DIRS, `LOCAL:REMOTE` a line) to every host with rsync, then
#               runs OFFLOAD_SANDBOX_INIT_CMD there. The image is named by a hash of its
#               content: a host that has it already is not sent anything (one ssh per
#               host, while the tree is hashed, asks). A host that fails is reported
#               (with a hint) and left out; prepare fails only when every host does.
#               Records locally which hosts hold the image, and where. Prints the image
#               id on the last stdout line.
#   create IMAGE
#               Claims a free slot (local bookkeeping, so concurrent runs on one machine
#               share the slots) on a host that prepare recorded, and names a fresh
#               sandbox directory there, without connecting: the first exec makes it
#               from the image (`cp --reflink=auto`). Prints the sandbox id,
#               `HOST:/remote/dir/sandbox-XXXXXXXXXX-IMAGE`. Without a record (an image
#               prepared elsewhere) it copies the image on the host at once, into
#               `sandbox-XXXXXX`, skipping hosts that cannot be reached or lack it.
#   exec SANDBOX CMD
#               Makes the sandbox directory first if create only named it (a sandbox
#               that cannot be made there is lost: exit 75).
#               Runs `sh -c CMD` in the sandbox directory, in a session of its own whose
#               id is recorded beside the sandbox; exits with its code, or with 75 when
#               the host or the connection to it went down meanwhile (Offload then
#               retires the sandbox and runs the batch's unfinished tests elsewhere).
#   download SANDBOX REMOTE:LOCAL...
#               Copies files or directories out of the sandbox (REMOTE relative to it,
#               or absolute).
#   destroy SANDBOX
#               Kills every process group the sandbox's commands started (also after
#               the connection of an exec dropped), removes the directory and frees
#               the slot.
#   hosts       Checks every host (ssh, rsync, writable directory) and prints one line
#               each, with what runs there now.
#   clean       Removes every image and sandbox on every host (only while no run uses
#               them) and the local slot records.
#
# On each host everything lives under OFFLOAD_SSH_REMOTE_DIR (set on this side), else
# $OFFLOAD_SSH_HOME (set on the host), else ~/.cache/offload-ssh. Slot records live
# under OFFLOAD_SSH_STATE_DIR, else $XDG_RUNTIME_DIR/offload-ssh, else
# ${TMPDIR:-/tmp}/offload-ssh-UID.
#
# A host needs a POSIX shell, rsync, cp, setsid (util-linux) and the project's test
# toolchain.

set -eu

prog=ssh_sandbox.sh
connect_timeout=${OFFLOAD_SSH_CONNECT_TIMEOUT:-10}
state=${OFFLOAD_SSH_STATE_DIR:-${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/offload-ssh}}
state=${state:-${TMPDIR:-/tmp}/offload-ssh-$(id -u)}
hosts_list=${OFFLOAD_SSH_HOSTS:-}

die() {
    echo "$prog: $*" >&2
    exit 1
}

warn() {
    echo "$prog: $*" >&2
}

usage() {
    cat >&2 <<EOF
usage: $prog prepare [--hosts LIST]   (inputs in OFFLOAD_* variables: see the script's header)
       $prog create [--hosts LIST] IMAGE
       $prog exec SANDBOX COMMAND
       $prog download SANDBOX REMOTE:LOCAL...
       $prog destroy SANDBOX
       $prog hosts [--hosts LIST]
       $prog clean [--hosts LIST]
hosts: OFFLOAD_SSH_HOSTS or --hosts, entries [user@]host[:port][/slots]
EOF
    exit 2
}

# Single-quotes $1 for a POSIX shell.
q() {
    quote_into "$1"
    printf '%s' "$qv"
}

# Sets $qv to $1 single-quoted for a POSIX shell, without a subshell: every command
# forks several times otherwise, which adds up on a busy machine.
quote_into() {
    rest=$1
    qv=
    while :; do
        case "$rest" in
        *\'*)
            qv="$qv${rest%%\'*}'\\''"
            rest=${rest#*\'}
            ;;
        *)
            qv="'$qv$rest'"
            return 0
            ;;
        esac
    done
}

# Sets $target (`[user@]host`) and $port (maybe empty) from host entry $1.
split_entry() {
    e=${1%%/*}
    case "$e" in
    \[*\]:*) target=${e%:*} port=${e##*:} ;;
    \[*) target=$e port= ;;
    *:*) target=${e%%:*} port=${e#*:} ;;
    *) target=$e port= ;;
    esac
}

# Host entry parts: `[user@]host[:port][/slots]`.
entry_target() { # user@host
    e=${1%%/*}
    case "$e" in
    \[*\]:*) printf '%s\n' "${e%:*}" ;;
    *:*) printf '%s\n' "${e%%:*}" ;;
    *) printf '%s\n' "$e" ;;
    esac
}
entry_port() {
    e=${1%%/*}
    case "$e" in
    \[*\]:*) printf '%s\n' "${e##*:}" ;;
    \[*) ;;
    *:*) printf '%s\n' "${e#*:}" ;;
    esac
}
entry_slots() {
    case "$1" in
    */*) printf '%s\n' "${1#*/}" ;;
    *) echo 1 ;;
    esac
}
# The entry without its slot count: the host part of sandbox ids.
entry_host() {
    printf '%s\n' "${1%%/*}"
}

# The host entries, one a line, checked.
hosts() {
    [ -n "$hosts_list" ] || die "no hosts (hint: set OFFLOAD_SSH_HOSTS to entries like \`user@build1:22/4\`, or pass --hosts)"
    printf '%s\n' "$hosts_list" | tr ', \t' '\n\n\n' | while IFS= read -r e; do
        [ -n "$e" ] || continue
        slots=$(entry_slots "$e")
        case "$slots" in
        '' | *[!0-9]*) die "host entry \`$e\`: the slot count \`$slots\` is not a number (hint: \`user@host:port/SLOTS\`)" ;;
        esac
        [ "$slots" -ge 1 ] || die "host entry \`$e\`: the slot count must be at least 1"
        port=$(entry_port "$e")
        case "$port" in
        *[!0-9]*) die "host entry \`$e\`: the port \`$port\` is not a number (hint: \`user@host:port/SLOTS\`)" ;;
        esac
        [ -n "$(entry_target "$e")" ] || die "host entry \`$e\` names no host"
        printf '%s\n' "$e"
    done
}

# Sets $port, $target and $line: what ssh needs to run the POSIX shell script $2 on host
# $1 with arguments $3...
remote_call() {
    host=$1
    quote_into "$2"
    shift 2
    split_entry "$host"
    line="sh -c $qv sh"
    for a; do
        quote_into "$a"
        line="$line $qv"
    done
}

# Runs the POSIX shell script $2 on host $1 with arguments $3...; stdin is not read.
remote() {
    remote_call "$@"
    # shellcheck disable=SC2086 # OFFLOAD_SSH_OPTIONS is a list of words
    ssh -n ${OFFLOAD_SSH_OPTIONS:-} -o BatchMode=yes -o ConnectTimeout="$connect_timeout" \
        ${port:+-p "$port"} "$target" "$line"
}

# The remote snippet that sets $base (created, absolute) on a host.
base_snippet() {
    if [ -n "${OFFLOAD_SSH_REMOTE_DIR:-}" ]; then
        printf 'base=%s; ' "$(q "$OFFLOAD_SSH_REMOTE_DIR")"
    else
        # shellcheck disable=SC2016 # expanded on the host
        printf '%s' 'base=${OFFLOAD_SSH_HOME:-$HOME/.cache/offload-ssh}; '
    fi
    # shellcheck disable=SC2016 # expanded on the host
    printf '%s' 'mkdir -p "$base" 2>/dev/null || { echo "cannot create the directory $base" >&2; exit 3; }; base=$(cd "$base" && pwd -P); touch "$base/.offload-ssh" 2>/dev/null || { echo "cannot write into $base" >&2; exit 3; }; '
}

# Turns an ssh/rsync failure (exit code $2, stderr in file $3) on host $1 into a message
# with a hint.
explain() {
    host=$1
    code=$2
    # The last lines of the error output, without our own progress lines.
    err=$(grep -v "^$host: " "$3" 2>/dev/null | tail -n 5 | tr '\n' ' ')
    target=$(entry_target "$host")
    port=$(entry_port "$host")
    try="ssh${OFFLOAD_SSH_OPTIONS:+ $OFFLOAD_SSH_OPTIONS}${port:+ -p $port} $target true"
    case "$err" in
    *"Permission denied"* | *"Too many authentication failures"*)
        echo "host $host refuses our key: $err(hint: add your public key to ~/.ssh/authorized_keys there, or name the right key with IdentityFile in ~/.ssh/config or -i in OFFLOAD_SSH_OPTIONS; check with \`$try\`)" ;;
    *"Connection refused"* | *"timed out"* | *"No route to host"* | *"Could not resolve"* | *"Name or service not known"* | *"Connection closed"* | *"Connection reset"*)
        echo "cannot reach host $host: $err(hint: check that sshd runs there and that the name and port in OFFLOAD_SSH_HOSTS are right; check with \`$try\`)" ;;
    *"No space left"* | *"Disk quota"*)
        echo "host $host is out of disk space: $err(hint: free space there, or point OFFLOAD_SSH_REMOTE_DIR at a bigger file system)" ;;
    *"rsync: command not found"* | *"rsync: not found"* | *"rsync error: remote command not found"* | *"no rsync"*)
        echo "host $host has no rsync: $err(hint: install rsync there, e.g. \`apt-get install rsync\`)" ;;
    *"Read-only file system"* | *"Permission denied"* | *"cannot create"* | *"cannot write"*)
        echo "host $host cannot store the project: $err(hint: make the directory writable, or point OFFLOAD_SSH_REMOTE_DIR at a writable one)" ;;
    *)
        echo "host $host failed (exit $code): $err(hint: check with \`$try\`)" ;;
    esac
}

# sha256 of stdin, hex.
sum256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | cut -d' ' -f1
    else
        shasum -a 256 | cut -d' ' -f1
    fi
}

# Writes the NUL-separated, sorted list of what the image holds from directory $1 into
# file $2: in a git work tree its tracked and untracked-but-not-ignored files (deleted
# ones left out), elsewhere everything.
file_list() {
    if (cd "$1" && git rev-parse --is-inside-work-tree >/dev/null 2>&1); then
        (cd "$1" && git ls-files -z --cached --others --exclude-standard |
            xargs -0 sh -c 'for f; do if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\0" "$f"; fi; done' sh) |
            LC_ALL=C sort -z >"$2"
    else
        (cd "$1" && find . ! -path . ! -type d -print0 | LC_ALL=C sort -z) >"$2"
    fi
}

# The content hash of the files listed in $2 (see file_list) under directory $1: names,
# modes (executable or not), symlink targets and contents.
tree_hash() {
    (
        cd "$1"
        xargs -0 sh -c 'for f; do
            if [ -L "$f" ]; then printf "L %s %s\n" "$f" "$(readlink "$f")"
            elif [ -d "$f" ]; then printf "D %s\n" "$f"
            elif [ -x "$f" ]; then printf "X %s\n" "$f"
            else printf "F %s\n" "$f"; fi
        done' sh <"$2"
        # Contents of the regular files (symlinks stand for their target above).
        xargs -0 sh -c 'for f; do [ -L "$f" ] || [ ! -f "$f" ] || printf "%s\0" "$f"; done' sh <"$2" |
            xargs -0 cat 2>/dev/null | sum256
    ) | sum256
}

# Sends the image to host $1: $2 image id, $3 context dir, $4 list file; writes the
# host's directory (where the image is) into file $5. Progress and errors on stderr.
sync_host() {
    host=$1
    image=$2
    src=$3
    list=$4
    base_file=$5
    split_entry "$host"
    # shellcheck disable=SC2016 # expanded on the host
    probe="$(base_snippet)"'
        command -v rsync >/dev/null 2>&1 || { echo "no rsync on this host" >&2; exit 4; }
        if [ -f "$base/image-$1/.offload-image" ]; then echo "have $base"; exit 0; fi
        rm -rf "$base/image-$1.tmp-$2" && mkdir -p "$base/image-$1.tmp-$2" || exit 3
        if [ -d "$base/latest" ]; then echo "send $base latest"; else echo "send $base"; fi'
    answer=$(remote "$host" "$probe" "$image" "$$") || return $?
    set -- $answer
    rbase=$2
    printf '%s\n' "$rbase" >"$base_file"
    if [ "$1" = have ]; then
        echo "$host: image $image is there already" >&2
        return 0
    fi
    tmp="$rbase/image-$image.tmp-$$"
    copy_dest=
    [ "${3:-}" != latest ] || copy_dest="--copy-dest=$rbase/latest/"
    echo "$host: sending the project to $tmp" >&2
    rsh="ssh ${OFFLOAD_SSH_OPTIONS:-} -o BatchMode=yes -o ConnectTimeout=$connect_timeout${port:+ -p $port}"
    code=0
    rsync -a --from0 --files-from="$list" $copy_dest -e "$rsh" "$src/" "$target:$tmp/" >&2 || code=$?
    if [ "$code" != 0 ]; then
        # rsync's own message can be lost when the receiver dies: say what the disk
        # looks like, then remove the half-sent image.
        # shellcheck disable=SC2016 # expanded on the host
        free=$(remote "$host" 'df -Pk "$1" | tail -n 1 | awk "{print \$4}"; rm -rf "$2"' "$rbase" "$tmp" 2>/dev/null) || true
        case "$free" in
        '' | *[!0-9]*) ;;
        *) [ "$free" -ge 1024 ] || echo "No space left on device: ${free} KiB free in $rbase" >&2 ;;
        esac
        return "$code"
    fi
    copies=$(printf '%s\n' "${OFFLOAD_COPY_DIRS:-}")
    if [ -n "$copies" ]; then
        printf '%s\n' "$copies" | while IFS= read -r spec; do
            [ -n "$spec" ] || continue
            from=${spec%%:*}
            to=${spec#*:}
            while case "$to" in /*) true ;; *) false ;; esac; do to=${to#/}; done
            echo "$host: copying $from to $to" >&2
            remote "$host" 'mkdir -p "$1"' "$tmp/$to" || exit $?
            if [ -d "$from" ]; then
                rsync -a -e "$rsh" "$from/" "$target:$tmp/$to/" >&2 || exit $?
            else
                rsync -a -e "$rsh" "$from" "$target:$tmp/$to/" >&2 || exit $?
            fi
        done || return $?
    fi
    # shellcheck disable=SC2016 # expanded on the host
    finish='tmp=$1; image=$2; init=$3
        cd "$tmp" || exit 3
        if [ -n "$init" ]; then
            echo "running the init command" >&2
            sh -c "$init" >&2 || { echo "the init command failed: $init" >&2; cd /; rm -rf "$tmp"; exit 5; }
        fi
        cd .. || exit 3
        : >"$tmp/.offload-image"
        # Another run may have sent the same image meanwhile: keep the first.
        mv -T "$tmp" "image-$image" 2>/dev/null || rm -rf "$tmp"
        ln -sfn "image-$image" latest'
    remote "$host" "$finish" "$tmp" "$image" "${OFFLOAD_SANDBOX_INIT_CMD:-}" >&2
}

cmd_prepare() {
    while [ $# -gt 0 ]; do
        case "$1" in
        --hosts) [ $# -ge 2 ] || usage; hosts_list=$2; shift 2 ;;
        *) echo "$prog: prepare takes only --hosts (it reads OFFLOAD_* variables), got \`$1\`" >&2; usage ;;
        esac
    done
    [ -z "${OFFLOAD_BASE_IMAGE:-}" ] || die "prepare does not build thin diffs (hint: leave \`thin_diff\` off for @ssh_sandbox.sh; unchanged trees are not sent again anyway)"
    all=$(hosts)
    context=${OFFLOAD_CONTEXT_DIR:-.}
    [ -d "$context" ] || die "the directory to export \`$context\` does not exist"
    src=$(cd "$context" && pwd -P)
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/offload-ssh-prepare-XXXXXX")
    trap 'rm -rf "$scratch"' EXIT
    # Every host says which images it holds while the tree is hashed: the round trip
    # costs no time of its own, and it opens the connection that a ControlMaster then
    # keeps for the sandboxes.
    # shellcheck disable=SC2016 # expanded on the host
    probe="$(base_snippet)"'command -v rsync >/dev/null 2>&1 || { echo "no rsync on this host" >&2; exit 4; }
        printf "%s\n" "$base"
        for f in "$base"/image-*/.offload-image; do
            [ -f "$f" ] || continue
            f=${f%/.offload-image}
            printf "%s\n" "${f##*/image-}"
        done'
    n=0
    for host in $all; do
        n=$((n + 1))
        (
            code=0
            remote "$host" "$probe" >"$scratch/have-$n" 2>"$scratch/err-$n" || code=$?
            echo "$code" >"$scratch/probe-$n"
        ) &
    done
    file_list "$src" "$scratch/list"
    {
        echo "context $(tree_hash "$src" "$scratch/list")"
        printf '%s\n' "${OFFLOAD_COPY_DIRS:-}" | while IFS= read -r spec; do
            [ -n "$spec" ] || continue
            case "$spec" in *:*) ;; *) die "invalid copy dir \`$spec\`: expected LOCAL:REMOTE" ;; esac
            from=${spec%%:*}
            [ -e "$from" ] || die "copy dir \`$spec\`: \`$from\` does not exist"
            case "/${spec#*:}/" in */../*) die "refusing copy dir \`$spec\`: the remote path leaves the image" ;; esac
            if [ -d "$from" ]; then
                (cd "$from" && find . ! -path . -print0 | LC_ALL=C sort -z) >"$scratch/copy"
                echo "copy $spec $(tree_hash "$from" "$scratch/copy")"
            else
                echo "copy $spec $(sum256 <"$from")"
            fi
        done
        echo "init ${OFFLOAD_SANDBOX_INIT_CMD:-}"
    } >"$scratch/manifest"
    image=$(sum256 <"$scratch/manifest" | cut -c1-32)
    wait
    echo "image $image: sending it to every host that lacks it" >&2
    n=0
    for host in $all; do
        n=$((n + 1))
        code=$(cat "$scratch/probe-$n" 2>/dev/null || echo 1)
        if [ "$code" != 0 ]; then
            echo "$code" >"$scratch/code-$n"
        elif tail -n +2 "$scratch/have-$n" | grep -qx "$image"; then
            head -n 1 "$scratch/have-$n" >"$scratch/base-$n"
            echo "$host: image $image is there already" >"$scratch/err-$n"
            echo 0 >"$scratch/code-$n"
        else
            (
                code=0
                sync_host "$host" "$image" "$src" "$scratch/list" "$scratch/base-$n" 2>"$scratch/err-$n" || code=$?
                echo "$code" >"$scratch/code-$n"
            ) &
        fi
    done
    wait
    record=$(image_record "$image")
    n=0
    ok=0
    : >"$scratch/hosts"
    for host in $all; do
        n=$((n + 1))
        code=$(cat "$scratch/code-$n" 2>/dev/null || echo 1)
        if [ "$code" = 0 ]; then
            ok=$((ok + 1))
            cat "$scratch/err-$n" >&2
            printf '%s %s\n' "$host" "$(cat "$scratch/base-$n")" >>"$scratch/hosts"
        else
            warn "$(explain "$host" "$code" "$scratch/err-$n"); going on without it"
        fi
    done
    [ "$ok" -gt 0 ] || die "no host could take the image $image (see the messages above)"
    # What create needs, so that it asks no host: which hosts hold the image, and where.
    if mkdir -p "$state/images" 2>/dev/null && cp "$scratch/hosts" "$record.$$" 2>/dev/null; then
        mv -f "$record.$$" "$record"
    else
        rm -f "$record.$$"
        warn "cannot write \`$record\` (hint: set OFFLOAD_SSH_STATE_DIR to a writable directory); create will ask the hosts"
    fi
    printf '%s\n' "$image"
}

# The local record of which hosts of the host list hold image $1 and where: lines
# `ENTRY DIR`, written by every prepare after asking the hosts. Named by the image and
# by what picks the hosts and their directories, so runs with other hosts keep records
# of their own.
image_record() {
    printf '%s/images/%s-%s\n' "$state" "$1" "$(printf '%s\n' "$hosts_list" "${OFFLOAD_SSH_OPTIONS:-}" "${OFFLOAD_SSH_REMOTE_DIR:-}" | cksum | cut -d' ' -f1)"
}

# The pid of the Offload process this command runs under (the nearest ancestor called
# `offload`), for telling stale slot claims apart; empty when unknown.
# Sets $owner; reads /proc with the shell's own `read`, as a subshell per ancestor would
# cost more than the rest of create.
owner_pid() {
    owner=
    [ -r /proc/$$/stat ] || return 0
    pid=$$
    while [ "$pid" -gt 1 ]; do
        IFS= read -r comm <"/proc/$pid/comm" 2>/dev/null || return 0
        if [ "$comm" = offload ]; then
            owner=$pid
            return 0
        fi
        IFS= read -r stat <"/proc/$pid/stat" 2>/dev/null || return 0
        # `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        # shellcheck disable=SC2086 # split into fields on purpose
        set -- ${stat##*) }
        pid=${2:-1}
    done
}

# The local slot directory of host entry $1.
slot_dir() {
    printf '%s/slots/%s\n' "$state" "$(entry_host "$1" | tr '/@:[]' '_____')"
}

# Claims slot $2 of host $1; fails when taken (by a live owner).
claim() {
    d=$(slot_dir "$1")/$2
    mkdir -p "$(dirname "$d")"
    if mkdir "$d" 2>/dev/null; then
        echo "${owner:-}" >"$d/owner"
        return 0
    fi
    # A claim whose owner is gone (a run that was killed) is free.
    o=$(cat "$d/owner" 2>/dev/null || true)
    if [ -n "$o" ] && ! kill -0 "$o" 2>/dev/null; then
        rm -rf "$d"
        mkdir "$d" 2>/dev/null || return 1
        echo "${owner:-}" >"$d/owner"
        return 0
    fi
    return 1
}

cmd_create() {
    image=
    while [ $# -gt 0 ]; do
        case "$1" in
        --hosts) [ $# -ge 2 ] || usage; hosts_list=$2; shift 2 ;;
        -*) usage ;;
        *) [ -z "$image" ] || usage; image=$1; shift ;;
        esac
    done
    [ -n "$image" ] || usage
    case "$image" in *[!0-9a-f]*) die "invalid image id \`$image\` (hint: ids are printed by \`$prog prepare\`)" ;; esac
    owner_pid
    record=$(image_record "$image")
    if [ -f "$record" ]; then
        create_recorded "$image" "$record"
        die "no free slot on a host that holds image $image (hosts: $(echo $hosts_list); hint: lower max_parallel to the sum of the slots, or add hosts)"
    fi
    # No record (an image prepared elsewhere): ask the hosts.
    all=$(hosts)
    mkdir -p "$state/slots" || die "cannot create the slot directory \`$state\` (hint: set OFFLOAD_SSH_STATE_DIR to a writable directory)"
    max=0
    for host in $all; do
        s=$(entry_slots "$host")
        [ "$s" -le "$max" ] || max=$s
    done
    errs=$(mktemp "${TMPDIR:-/tmp}/offload-ssh-create-XXXXXX")
    trap 'rm -f "$errs"' EXIT
    failures=
    # Slot 1 of every host first, then slot 2...: sandboxes spread over the hosts.
    slot=1
    while [ "$slot" -le "$max" ]; do
        for host in $all; do
            [ "$slot" -le "$(entry_slots "$host")" ] || continue
            case " $failures " in *" $host "*) continue ;; esac
            claim "$host" "$slot" || continue
            # shellcheck disable=SC2016 # expanded on the host
            script="$(base_snippet)"'
                [ -f "$base/image-$1/.offload-image" ] || { echo "no image $1 here (its prepare failed)" >&2; exit 6; }
                sb=$(mktemp -d "$base/sandbox-XXXXXX") || exit 3
                if ! cp -a --reflink=auto "$base/image-$1/." "$sb/" 2>/dev/null; then
                    rm -rf "$sb"; sb=$(mktemp -d "$base/sandbox-XXXXXX") || exit 3
                    cp -pR "$base/image-$1/." "$sb/" || { rm -rf "$sb"; exit 3; }
                fi
                rm -f "$sb/.offload-image"
                printf "%s\n" "$sb"'
            code=0
            dir=$(remote "$host" "$script" "$image" 2>"$errs") || code=$?
            if [ "$code" = 0 ] && [ -n "$dir" ]; then
                id="$(entry_host "$host"):$dir"
                printf '%s\n' "$id" >"$(slot_dir "$host")/$slot/sandbox"
                echo "sandbox on $host (slot $slot): $dir" >&2
                printf '%s\n' "$id"
                return 0
            fi
            rm -rf "$(slot_dir "$host")/$slot"
            if [ "$code" = 6 ]; then
                warn "host $host: $(cat "$errs") (hint: see the prepare messages for why); trying another host"
            else
                warn "$(explain "$host" "$code" "$errs"); trying another host"
            fi
            failures="$failures $host"
        done
        slot=$((slot + 1))
    done
    die "no free slot on a working host (hosts: $(echo $all); hint: lower max_parallel to the sum of the slots, or add hosts)"
}

# Creates a sandbox on a host that the last prepare of image $1 recorded in file $2 (see
# image_record), asking no host: it claims a slot and names a directory there, which
# the first exec makes from the image (so that creating costs no connection). Returns
# only when every slot is taken.
create_recorded() {
    max=0
    while read -r host rbase; do
        s=${host#*/}
        [ "$s" != "$host" ] || s=1
        [ "$s" -le "$max" ] || max=$s
    done <"$2"
    slot=1
    while [ "$slot" -le "$max" ]; do
        while read -r host rbase; do
            s=${host#*/}
            [ "$s" != "$host" ] || s=1
            [ "$slot" -le "$s" ] || continue
            claim "$host" "$slot" || continue
            # A fresh name: mktemp -u makes it locally, mkdir on the host makes it once.
            name=$(mktemp -u sandbox-XXXXXXXXXX) || { rm -rf "$(slot_dir "$host")/$slot"; die "cannot make a sandbox name"; }
            dir="$rbase/$name-$1"
            id="${host%%/*}:$dir"
            printf '%s\n' "$id" >"$(slot_dir "$host")/$slot/sandbox"
            echo "sandbox on $host (slot $slot): $dir" >&2
            printf '%s\n' "$id"
            exit 0
        done <"$2"
        slot=$((slot + 1))
    done
}

# Splits sandbox id $1 into $sb_host and $sb_dir, checking its shape.
parse_id() {
    case "$1" in
    *:/*/sandbox-*) ;;
    *) die "invalid sandbox id \`$1\` (hint: ids are printed by \`$prog create\`)" ;;
    esac
    sb_host=${1%%:/*}
    sb_dir=/${1#*:/}
    case "$sb_dir" in
    */../* | */..) die "invalid sandbox id \`$1\`" ;;
    esac
}

# The remote snippet that checks $sb (first argument) is a sandbox directory.
# shellcheck disable=SC2016 # expanded on the host
check_snippet='sb=$1; [ -d "$sb" ] || { echo "no sandbox $sb" >&2; exit 7; }; [ -f "${sb%/*}/.offload-ssh" ] || { echo "refusing $sb: not under an offload-ssh directory" >&2; exit 7; }; '

# The remote snippet that makes sandbox $1 from image $3 (when $3 is set and the
# sandbox does not exist yet). A sandbox that cannot be made is lost (exit 75): Offload
# then runs its tests elsewhere.
# shellcheck disable=SC2016 # expanded on the host
make_snippet='if [ -n "$3" ] && [ ! -d "$1" ]; then
        sb=$1 base=${1%/*}
        lost() { echo "ssh_sandbox.sh: cannot make sandbox $sb on this host: $* (exit 75: the sandbox is lost, not the tests)" >&2; exit 75; }
        [ -f "$base/.offload-ssh" ] || lost "$base is not an offload-ssh directory"
        [ -f "$base/image-$3/.offload-image" ] || lost "image $3 is gone from $base (hint: a \`clean\` while this run was starting?)"
        mkdir "$sb" 2>/dev/null || lost "cannot create it"
        if ! cp -a --reflink=auto "$base/image-$3/." "$sb/" 2>/dev/null; then
            rm -rf "$sb" && mkdir "$sb" && cp -pR "$base/image-$3/." "$sb/" || { rm -rf "$sb"; lost "cannot copy the image into it"; }
        fi
        rm -f "$sb/.offload-image"
    fi
    '

cmd_exec() {
    [ $# -eq 2 ] || usage
    parse_id "$1"
    # The command runs in a session (and process group) of its own, recorded beside the
    # sandbox so that destroy kills it even when this connection is gone.
    # A sandbox that create named without asking the host (`sandbox-XXXXXXXXXX-IMAGE`)
    # is made from the image by its first exec, in the same connection.
    name=${sb_dir##*/}
    image=${name#sandbox-}
    case "$image" in
    *-*) image=${image##*-} ;;
    *) image= ;;
    esac
    # shellcheck disable=SC2016 # expanded on the host
    script="$make_snippet$check_snippet"'cd "$sb" || exit 7
        if command -v setsid >/dev/null 2>&1; then
            # Not the last command: a shell that execs it would make setsid fork.
            setsid sh -c '\''echo $$ >>"$1.pgids"; cd "$1" && exec sh -c "$2"'\'' sh "$sb" "$2"
        else
            sh -c '\''echo $$ >>"$1.pids"; cd "$1" && exec sh -c "$2"'\'' sh "$sb" "$2"
        fi
        code=$?
        # 255 is also what ssh exits with when the connection fails: leave a mark.
        [ "$code" != 255 ] || : >"$sb.exit255"
        exit "$code"'
    code=0
    remote "$sb_host" "$script" "$sb_dir" "$2" "$image" || code=$?
    if [ "$code" = 255 ]; then
        # ssh failed, or the command exited with 255: the mark tells them apart. No
        # answer means the host or the connection is gone.
        # shellcheck disable=SC2016 # expanded on the host
        if remote "$sb_host" '[ -e "$1.exit255" ] && rm -f "$1.exit255"' "$sb_dir" 2>/dev/null; then
            exit 255
        fi
        warn "lost host $sb_host while it ran a command in sandbox $sb_dir (exit 75: the sandbox is lost, not the tests)"
        exit 75
    fi
    exit "$code"
}

cmd_download() {
    [ $# -ge 2 ] || usage
    parse_id "$1"
    shift
    for pair; do
        case "$pair" in
        *:*) ;;
        *) die "invalid download pair \`$pair\`: expected REMOTE:LOCAL" ;;
        esac
        rpath=${pair%%:*}
        local_path=${pair#*:}
        case "$local_path" in
        */*) parent=${local_path%/*} ;;
        *) parent=. ;;
        esac
        [ -d "${parent:-/}" ] || mkdir -p "$parent" || die "cannot create \`$parent\`"
        # One connection: a kind line (d or f), then a tar stream or the file.
        # shellcheck disable=SC2016 # expanded on the host
        script="$check_snippet"'cd "$sb" || exit 7
            if [ -d "$2" ]; then echo d; cd "$2" && tar -cf - .
            elif [ -f "$2" ]; then echo f; cat "$2"
            else echo "cannot download $2: it does not exist in sandbox $sb" >&2; exit 8; fi'
        tmp="$local_path.offload-download-$$"
        code=0
        remote "$sb_host" "$script" "$sb_dir" "$rpath" | {
            IFS= read -r kind || exit 1
            if [ "$kind" = d ]; then
                mkdir -p "$tmp" && (cd "$tmp" && tar -xpf -)
            else
                cat >"$tmp"
            fi
        } || code=$?
        if [ "$code" != 0 ] || [ ! -e "$tmp" ]; then
            rm -rf "$tmp"
            die "cannot download \`$rpath\` from sandbox \`$sb_dir\` on $sb_host"
        fi
        if [ -d "$tmp" ]; then
            mkdir -p "$local_path"
            (cd "$tmp" && tar -cf - .) | (cd "$local_path" && tar -xpf -)
            rm -rf "$tmp"
        else
            mv -f "$tmp" "$local_path"
        fi
    done
}

# Frees the local slot that holds sandbox id $1.
release() {
    for f in "$state"/slots/*/*/sandbox; do
        held=
        IFS= read -r held <"$f" 2>/dev/null || true
        if [ "$held" = "$1" ]; then
            rm -rf "${f%/sandbox}"
        fi
    done
}

# The remote snippet that kills the process groups recorded for sandbox $sb and removes
# it.
# shellcheck disable=SC2016 # expanded on the host
kill_snippet='for sig in TERM KILL; do
        alive=
        for g in $(cat "$sb.pgids" 2>/dev/null); do ! kill -s $sig -- "-$g" 2>/dev/null || alive=1; done
        for p in $(cat "$sb.pids" 2>/dev/null); do ! kill -s $sig "$p" 2>/dev/null || alive=1; done
        # Give what got TERM a moment to exit; nothing to wait for when nothing was left.
        [ -z "$alive" ] || [ $sig = KILL ] || sleep 0.2 2>/dev/null || sleep 1
    done
    rm -rf "$sb" "$sb.pgids" "$sb.pids" "$sb.exit255"'

cmd_destroy() {
    [ $# -eq 1 ] || usage
    parse_id "$1"
    errs=$(mktemp "${TMPDIR:-/tmp}/offload-ssh-destroy-XXXXXX")
    trap 'rm -f "$errs"' EXIT
    code=0
    # shellcheck disable=SC2016 # expanded on the host
    remote "$sb_host" 'sb=$1; [ -e "$sb" ] || [ -e "$sb.pgids" ] || { echo gone; exit 0; }
        [ -f "$(dirname "$sb")/.offload-ssh" ] || { echo "refusing $sb: not under an offload-ssh directory" >&2; exit 7; }
        '"$kill_snippet" "$sb_dir" >/dev/null 2>"$errs" || code=$?
    release "$1"
    if [ "$code" != 0 ]; then
        cat "$errs" >&2
        die "$(explain "$sb_host" "$code" "$errs"); sandbox \`$sb_dir\` is left there (remove it with \`$prog clean\` once the host is back)"
    fi
}

cmd_hosts() {
    while [ $# -gt 0 ]; do
        case "$1" in
        --hosts) [ $# -ge 2 ] || usage; hosts_list=$2; shift 2 ;;
        *) usage ;;
        esac
    done
    errs=$(mktemp "${TMPDIR:-/tmp}/offload-ssh-hosts-XXXXXX")
    trap 'rm -f "$errs"' EXIT
    status=0
    for host in $(hosts); do
        # shellcheck disable=SC2016 # expanded on the host
        script="$(base_snippet)"'command -v rsync >/dev/null 2>&1 || { echo "no rsync on this host" >&2; exit 4; }
            n=0; for d in "$base"/sandbox-*; do [ -d "$d" ] && n=$((n + 1)); done
            i=0; for d in "$base"/image-*; do [ -d "$d" ] && i=$((i + 1)); done
            echo "$base: $i image(s), $n sandbox(es)"
            for d in "$base"/sandbox-*; do [ -d "$d" ] && echo "  $d"; done; true'
        if out=$(remote "$host" "$script" 2>"$errs"); then
            printf '%s (%s slot(s)): ok, %s\n' "$host" "$(entry_slots "$host")" "$out"
        else
            code=$?
            printf '%s: %s\n' "$host" "$(explain "$host" "$code" "$errs")"
            status=1
        fi
    done
    return "$status"
}

cmd_clean() {
    while [ $# -gt 0 ]; do
        case "$1" in
        --hosts) [ $# -ge 2 ] || usage; hosts_list=$2; shift 2 ;;
        *) usage ;;
        esac
    done
    status=0
    for host in $(hosts); do
        # shellcheck disable=SC2016 # expanded on the host
        remote "$host" "$(base_snippet)"'for sb in "$base"/sandbox-*; do
                case "$sb" in *.pgids|*.pids) continue ;; esac
                [ -e "$sb" ] || continue
                '"$kill_snippet"'
            done
            rm -rf "$base"/image-* "$base"/latest "$base"/sandbox-*' || {
            warn "cannot clean host $host"
            status=1
        }
    done
    rm -rf "$state/slots" "$state/images"
    return "$status"
}

[ $# -ge 1 ] || usage
sub=$1
shift
case "$sub" in
prepare) cmd_prepare "$@" ;;
create) cmd_create "$@" ;;
exec) cmd_exec "$@" ;;
download) cmd_download "$@" ;;
destroy) cmd_destroy "$@" ;;
hosts) cmd_hosts "$@" ;;
clean) cmd_clean "$@" ;;
-h | --help | help) usage ;;
*) echo "$prog: unknown subcommand \`$sub\`" >&2; usage ;;
esac
