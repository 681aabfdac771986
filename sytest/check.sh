#!/bin/sh
# Compares a SyTest run with sytest/passing: fails when a listed test ran
# and did not pass, and lists newly passing tests (RUN/candidates).
#
#   sytest/check.sh [--full] [RUN_DIR]   (default: the latest run)
#   sytest/check.sh --update [RUN_DIR]   adds the candidates to sytest/passing
#
# --full also fails on listed tests the run did not reach (a whole run).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cmd=check
flag=""
case "${1:-}" in
--update) cmd=update; shift ;;
--full) flag=--full; shift ;;
esac
run=${1:-${MACHI_SYTEST_OUT:-$here/results}/latest}
[ -f "$run/results.tap" ] || { echo "check.sh: no results.tap in $run (run sytest/run.sh first)" >&2; exit 2; }
exec perl "$here/tap.pl" $cmd $flag "$run"
