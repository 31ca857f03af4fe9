#!/bin/sh
# Starter test lister written by `offload init --framework default`: replace it with one
# that prints your own tests' IDs, one a line.
#
# Lists every `tests/test_*.sh` script (its path is the test ID). Arguments (the group's
# `filters`) keep only the IDs that contain one of them.
set -eu
[ -d tests ] || exit 0
find tests -type f -name 'test_*.sh' | sort | while IFS= read -r id; do
    if [ "$#" -eq 0 ]; then
        printf '%s\n' "$id"
        continue
    fi
    for filter in "$@"; do
        case $id in
        *"$filter"*)
            printf '%s\n' "$id"
            break
            ;;
        esac
    done
done
