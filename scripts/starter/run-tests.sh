#!/bin/sh
# Starter test runner written by `offload init --framework default`: replace it with
# your own. Offload calls it as `run-tests.sh --junit-xml RESULT_FILE ID...`.
#
# Runs each test script with `sh` and writes a JUnit XML report to RESULT_FILE: a test
# passes when its script exits 0; otherwise its output is the failure's text.
set -eu
if [ "${1:-}" != "--junit-xml" ] || [ "$#" -lt 2 ]; then
    echo "usage: $0 --junit-xml RESULT_FILE ID..." >&2
    exit 2
fi
result=$2
shift 2

# XML-escapes standard input.
escape() {
    sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'
}

cases=$(mktemp)
trap 'rm -f "$cases"' EXIT
failures=0
for id in "$@"; do
    name=$(printf '%s' "$id" | escape)
    status=0
    output=$(sh "$id" 2>&1) || status=$?
    if [ "$status" -eq 0 ]; then
        printf '  <testcase name="%s"/>\n' "$name" >>"$cases"
    else
        failures=$((failures + 1))
        printf '  <testcase name="%s"><failure message="exit code %s">%s</failure></testcase>\n' \
            "$name" "$status" "$(printf '%s' "$output" | escape)" >>"$cases"
    fi
    printf '%s\n' "$output"
done
{
    printf '<?xml version="1.0" encoding="UTF-8"?>\n'
    printf '<testsuite name="starter" tests="%s" failures="%s">\n' "$#" "$failures"
    cat "$cases"
    printf '</testsuite>\n'
} >"$result"
[ "$failures" -eq 0 ]
