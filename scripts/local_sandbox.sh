#!/bin/sh
# local_sandbox.sh: a local-directory sandbox backend for Offload's `default` provider.
#
# Each sandbox is a private copy of the project in a directory of its own, so parallel
# batches never see each other's files. Offload bundles this script; refer to it as
# `@local_sandbox.sh` in the provider commands:
#
#   [provider]
#   type = "default"
#   prepare_command  = "@local_sandbox.sh prepare"
#   thin_diff        = true
#   create_command   = "@local_sandbox.sh create {image_id}"
#   exec_command     = "@local_sandbox.sh exec {sandbox_id} {command}"
#   download_command = "@local_sandbox.sh download {sandbox_id} {paths}"
#   destroy_command  = "@local_sandbox.sh destroy {sandbox_id}"
#
# Subcommands (ids are absolute directory paths under the base directory):
#   prepare
#       Builds an image directory and prints its id on the last stdout line. It takes no
#       arguments: like any `prepare_command`, it reads what Offload has for it from the
#       environment.
#       Full build (OFFLOAD_BASE_IMAGE unset): exports the tree of OFFLOAD_CONTEXT_DIR
#       (default: the current directory) into a fresh image directory. In a git work
#       tree the export holds the tracked files plus untracked files that are not
#       ignored, as they are on disk now (deleted files are left out); elsewhere the
#       whole directory. Each line LOCAL:REMOTE of OFFLOAD_COPY_DIRS copies LOCAL to
#       REMOTE inside the image (REMOTE is relative to the image; a leading `/` is
#       dropped). OFFLOAD_SANDBOX_INIT_CMD then runs with `sh -c` inside the image.
#       Incremental build (OFFLOAD_BASE_IMAGE set, for `thin_diff = true`): copies that
#       image into a fresh image directory, applies OFFLOAD_PATCH_FILE there (when set)
#       with `"${OFFLOAD_BIN:-offload}" apply-diff`, copies in the lines of
#       OFFLOAD_COPY_DIRS (the run's own files, such as its cargo test archive), then
#       runs OFFLOAD_POST_PATCH_CMD (when set) with `sh -c` inside it.
#   create IMAGE        Copies the image into a fresh sandbox directory; prints its id.
#   exec SANDBOX CMD    Runs `sh -c CMD` inside the sandbox directory; exits with its code.
#   download SANDBOX REMOTE:LOCAL...
#                       Copies files (or directories) out of the sandbox. REMOTE is
#                       relative to the sandbox directory, or absolute; LOCAL is relative
#                       to the current directory, or absolute.
#   destroy SANDBOX     Removes the sandbox directory.
#   clean               Removes every image and sandbox under the base directory (only
#                       while no run uses them).
#
# The base directory is $OFFLOAD_SANDBOX_HOME, else $TMPDIR/offload-sandboxes, else
# /tmp/offload-sandboxes. Nothing outside it is ever removed.
#
# To drive another sandbox system, copy this script and replace the body of each
# subcommand: the protocol is the arguments and variables above, ids on stdout,
# progress on stderr, and exit codes.

set -eu

prog=local_sandbox.sh
base=${OFFLOAD_SANDBOX_HOME:-${TMPDIR:-/tmp}/offload-sandboxes}

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $prog prepare      (inputs in OFFLOAD_* variables: see the script's header)
       $prog create IMAGE
       $prog exec SANDBOX COMMAND
       $prog download SANDBOX REMOTE:LOCAL...
       $prog destroy SANDBOX
       $prog clean
base directory: $base (set OFFLOAD_SANDBOX_HOME to change it)
EOF
    exit 2
}

# The base directory, created if needed, as an absolute physical path.
base_dir() {
    mkdir -p "$base" || die "cannot create the base directory \`$base\` (hint: set OFFLOAD_SANDBOX_HOME to a writable directory)"
    (cd "$base" && pwd -P)
}

# Checks that $1 names an existing directory `$2-*` directly under the base directory
# and prints its physical path.
owned_dir() {
    dir=$1
    kind=$2
    [ -d "$dir" ] || die "no $kind \`$dir\` (hint: ids are the paths printed by \`$prog prepare\` and \`$prog create\`)"
    real=$(cd "$dir" && pwd -P)
    home=$(base_dir)
    case "$real" in
    "$home"/"$kind"-*) ;;
    *) die "refusing \`$dir\`: not a $kind directory under the base directory \`$home\`" ;;
    esac
    case "${real#"$home"/}" in
    */*) die "refusing \`$dir\`: not a $kind directory under the base directory \`$home\`" ;;
    esac
    printf '%s\n' "$real"
}

# Copies the contents of directory $1 into directory $2, keeping modes and symlinks.
copy_tree() {
    (cd "$1" && tar -cf - .) | (cd "$2" && tar -xpf -)
}

# Prints, NUL-separated, the files of the git work tree in the current directory that
# an export holds: tracked and untracked-but-not-ignored, minus deleted ones.
export_list() {
    git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\0" "$f"; fi; done' sh
}

# Incremental prepare: copy the base image, apply the thin diff with
# `offload apply-diff`, add the copy dirs, run the post-patch command there; prints the
# new image id.
prepare_incremental() {
    base_image=$(owned_dir "$1" image)
    patch=$2
    post_cmd=$3
    home=$(base_dir)
    image=$(mktemp -d "$home/image-XXXXXX") || die "cannot create an image directory under \`$home\`"
    trap 'rm -rf "$image"' EXIT
    copy_tree "$base_image" "$image" || die "cannot copy the base image \`$base_image\`"
    if [ -n "$patch" ]; then
        [ -f "$patch" ] || die "the patch file \`$patch\` does not exist"
        echo "applying the thin diff $patch" >&2
        "${OFFLOAD_BIN:-offload}" apply-diff "$patch" --project-root "$image" >&2 ||
            die "the thin diff does not apply to \`$base_image\`"
    fi
    while IFS= read -r spec; do
        [ -z "$spec" ] || copy_in "$spec" "$image"
    done <<EOF
${OFFLOAD_COPY_DIRS:-}
EOF
    if [ -n "$post_cmd" ]; then
        echo "running the post-patch command in the image" >&2
        if [ -n "$patch" ]; then
            (cd "$image" && OFFLOAD_PATCH_FILE=$patch sh -c "$post_cmd") >&2 || die "the post-patch command failed: $post_cmd"
        else
            (cd "$image" && unset OFFLOAD_PATCH_FILE && sh -c "$post_cmd") >&2 || die "the post-patch command failed: $post_cmd"
        fi
    fi
    trap - EXIT
    printf '%s\n' "$image"
}

# Copies the copy dir `LOCAL:REMOTE` ($1) into the image directory $2.
copy_in() {
    spec=$1
    case "$spec" in
    *:*) ;;
    *) die "invalid copy dir \`$spec\`: expected LOCAL:REMOTE" ;;
    esac
    from=${spec%%:*}
    to=${spec#*:}
    while case "$to" in /*) true ;; *) false ;; esac; do to=${to#/}; done
    case "/$to/" in
    */../*) die "refusing copy dir \`$spec\`: the remote path leaves the image" ;;
    esac
    [ -e "$from" ] || die "copy dir \`$spec\`: \`$from\` does not exist"
    echo "copying $from to $to" >&2
    mkdir -p "$2/$to"
    if [ -d "$from" ]; then
        copy_tree "$from" "$2/$to"
    else
        cp -p "$from" "$2/$to/"
    fi
}

cmd_prepare() {
    if [ $# -gt 0 ]; then
        echo "$prog: prepare takes no arguments (it reads OFFLOAD_* variables), got \`$1\`" >&2
        usage
    fi
    if [ -n "${OFFLOAD_BASE_IMAGE:-}" ]; then
        prepare_incremental "$OFFLOAD_BASE_IMAGE" "${OFFLOAD_PATCH_FILE:-}" "${OFFLOAD_POST_PATCH_CMD:-}"
        return
    fi
    context=${OFFLOAD_CONTEXT_DIR:-.}
    [ -d "$context" ] || die "the directory to export \`$context\` does not exist"
    home=$(base_dir)
    src=$(cd "$context" && pwd -P)
    case "$home/" in
    "$src"/*) die "the base directory \`$home\` is inside the exported tree \`$src\` (hint: point OFFLOAD_SANDBOX_HOME outside the project)" ;;
    esac
    image=$(mktemp -d "$home/image-XXXXXX") || die "cannot create an image directory under \`$home\`"
    # From here on a failure must not leave a half-made image behind.
    trap 'rm -rf "$image"' EXIT
    if (cd "$src" && git rev-parse --is-inside-work-tree >/dev/null 2>&1); then
        echo "exporting the git work tree of $src" >&2
        (cd "$src" && export_list | tar --null --no-recursion -T - -cf -) | (cd "$image" && tar -xpf -)
    else
        echo "exporting $src (not a git work tree: every file)" >&2
        copy_tree "$src" "$image"
    fi
    # One copy dir a line; the here-document keeps the loop in this shell, so `die`
    # ends the script.
    while IFS= read -r spec; do
        [ -z "$spec" ] || copy_in "$spec" "$image"
    done <<EOF
${OFFLOAD_COPY_DIRS:-}
EOF
    if [ -n "${OFFLOAD_SANDBOX_INIT_CMD:-}" ]; then
        echo "running the init command in the image" >&2
        (cd "$image" && sh -c "$OFFLOAD_SANDBOX_INIT_CMD") >&2 || die "the init command failed: $OFFLOAD_SANDBOX_INIT_CMD"
    fi
    trap - EXIT
    printf '%s\n' "$image"
}

cmd_create() {
    [ $# -eq 1 ] || usage
    image=$(owned_dir "$1" image)
    home=$(base_dir)
    sandbox=$(mktemp -d "$home/sandbox-XXXXXX") || die "cannot create a sandbox directory under \`$home\`"
    if ! copy_tree "$image" "$sandbox"; then
        rm -rf "$sandbox"
        die "cannot copy the image \`$image\` into \`$sandbox\`"
    fi
    printf '%s\n' "$sandbox"
}

cmd_exec() {
    [ $# -eq 2 ] || usage
    sandbox=$(owned_dir "$1" sandbox)
    cd "$sandbox"
    exec sh -c "$2"
}

cmd_download() {
    [ $# -ge 2 ] || usage
    sandbox=$(owned_dir "$1" sandbox)
    shift
    for pair; do
        case "$pair" in
        *:*) ;;
        *) die "invalid download pair \`$pair\`: expected REMOTE:LOCAL" ;;
        esac
        remote=${pair%%:*}
        local_path=${pair#*:}
        case "$remote" in
        /*) from=$remote ;;
        *) from=$sandbox/$remote ;;
        esac
        [ -e "$from" ] || die "cannot download \`$remote\`: \`$from\` does not exist in sandbox \`$sandbox\`"
        parent=$(dirname "$local_path")
        mkdir -p "$parent" || die "cannot create \`$parent\`"
        if [ -d "$from" ]; then
            mkdir -p "$local_path"
            copy_tree "$from" "$local_path"
        else
            cp "$from" "$local_path" || die "cannot copy \`$from\` to \`$local_path\`"
        fi
    done
}

cmd_destroy() {
    [ $# -eq 1 ] || usage
    if [ ! -e "$1" ]; then
        echo "$prog: sandbox \`$1\` is already gone" >&2
        return 0
    fi
    sandbox=$(owned_dir "$1" sandbox)
    rm -rf "$sandbox"
}

cmd_clean() {
    [ $# -eq 0 ] || usage
    home=$(base_dir)
    for dir in "$home"/image-* "$home"/sandbox-*; do
        [ -d "$dir" ] && rm -rf "$dir"
    done
    return 0
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
clean) cmd_clean "$@" ;;
-h | --help | help) usage ;;
*) echo "$prog: unknown subcommand \`$sub\`" >&2; usage ;;
esac
