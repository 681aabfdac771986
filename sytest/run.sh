#!/bin/sh
# Runs SyTest against machi: all tests, or the areas/files given.
#
#   sytest/run.sh                       every test; checks the whole pass list
#   sytest/run.sh 10apidoc 30rooms      areas (folders of SyTest's tests/)
#   sytest/run.sh tests/31sync/04timeline.pl
#   sytest/run.sh --update              every test, then adds the newly
#                                       passing ones to sytest/passing
#
# Environment:
#   SYTEST_DIR      a checkout of github.com/matrix-org/sytest (required)
#   NAHS_DIR        a checkout of Net-Async-HTTP-Server (github.com/gitpan/
#                   Net-Async-HTTP-Server), unless Perl already has it
#   MACHI_SYTEST_OUT       where runs go (default sytest/results, gitignored)
#   MACHI_SYTEST_POSTGRES  a PostgreSQL DSN: test servers use PostgreSQL
#   SYTEST_PORTS    port range for test servers (default 28800:28899)
#   SYTEST_TIMEOUT  seconds before the whole run is stopped (default 5400)
#   SYTEST_NO_APT=1 do not install Debian packages
#
# Writes RUN/results.tap (TAP), RUN/progress.log, RUN/summary.txt (counts by
# area), RUN/results.tsv, RUN/candidates and the servers' logs; the exit
# status is that of the pass-list check.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

update=0
full=1
files=""
for arg in "$@"; do
	case "$arg" in
	--update) update=1 ;;
	-h | --help) sed -n '2,24p' "$0"; exit 0 ;;
	-*) echo "run.sh: unknown flag $arg" >&2; exit 2 ;;
	*) full=0; files="$files $arg" ;;
	esac
done
if [ "$update" = 1 ] && [ "$full" = 0 ]; then
	echo "run.sh: --update runs every test; give no areas with it" >&2
	exit 2
fi

if [ -z "${SYTEST_DIR:-}" ]; then
	cat <<'EOF'
SYTEST_DIR is not set, so SyTest was not run. To run it:

    git clone https://github.com/matrix-org/sytest ~/sytest
    git clone https://github.com/gitpan/Net-Async-HTTP-Server ~/nahs
    SYTEST_DIR=~/sytest NAHS_DIR=~/nahs sytest/run.sh

(see sytest/README.md)
EOF
	exit 0
fi
[ -f "$SYTEST_DIR/run-tests.pl" ] || { echo "run.sh: $SYTEST_DIR has no run-tests.pl" >&2; exit 1; }
SYTEST_DIR=$(cd "$SYTEST_DIR" && pwd)

# Debian's packages cover SyTest's Perl modules but two: Crypt::Ed25519
# (sytest/perl5 has a stand-in) and Net::Async::HTTP::Server (NAHS_DIR).
pkgs="libasync-mergepoint-perl libclass-method-modifiers-perl libcryptx-perl
libdata-dump-perl libdbd-pg-perl libdbi-perl libdigest-hmac-perl
libemail-address-xs-perl libemail-mime-perl libfile-slurper-perl libfuture-perl
libhttp-message-perl libio-async-perl libio-async-ssl-perl libio-socket-ssl-perl
libjson-perl liblist-utilsby-perl libmetrics-any-perl libmodule-pluggable-perl
libmojolicious-perl libnet-async-http-perl libnet-ssleay-perl libsereal-perl
libstruct-dumb-perl libtap-harness-archive-perl libtest-fatal-perl liburi-perl
libwww-perl libyaml-libyaml-perl openssl"
if [ "${SYTEST_NO_APT:-}" != 1 ]; then
	missing=""
	for p in $pkgs; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		sudo=""
		[ "$(id -u)" = 0 ] || sudo="sudo"
		echo "installing Debian packages:$missing"
		$sudo apt-get update -q
		# shellcheck disable=SC2086
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
	fi
fi

# NAHSCompat brings the mirror's Net::Async::HTTP::Server 0.07 up to what
# SyTest uses of 0.09 (see sytest/perl5/NAHSCompat.pm).
PERL5LIB="$here/perl5${NAHS_DIR:+:$NAHS_DIR/lib}${PERL5LIB:+:$PERL5LIB}"
PERL5OPT="-MNAHSCompat${PERL5OPT:+ $PERL5OPT}"
export PERL5LIB PERL5OPT
if ! perl -e 'use Net::Async::HTTP::Server 0.09; use Crypt::Ed25519; use IO::Async::SSL; use YAML::XS' 2>/dev/null; then
	perl -e 'use Net::Async::HTTP::Server 0.09; use Crypt::Ed25519; use IO::Async::SSL; use YAML::XS' || true
	echo "run.sh: Perl modules missing; set NAHS_DIR to a checkout of github.com/gitpan/Net-Async-HTTP-Server" >&2
	exit 1
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${MACHI_SYTEST_OUT:-$here/results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
run="$out/$stamp"
mkdir -p "$run/work"
ln -sfn "$stamp" "$out/latest"

echo "building machi"
(cd "$repo" && go build -o "$run/machi" ./cmd/machi)

# Areas are folders of tests/ (or files); SyTest wants the file names.
args=""
for f in $files; do
	case "$f" in tests/*) ;; *) f="tests/$f" ;; esac
	if [ -d "$SYTEST_DIR/$f" ]; then
		args="$args $(cd "$SYTEST_DIR" && find "$f" -name '*.pl' | sort | tr '\n' ' ')"
	elif [ -f "$SYTEST_DIR/$f" ]; then
		args="$args $f"
	else
		echo "run.sh: no test area or file $f in $SYTEST_DIR/tests" >&2
		exit 2
	fi
done

echo "running SyTest (${files:-all tests}) → $run"
start=$(date +%s)
set +e
# shellcheck disable=SC2086
(cd "$SYTEST_DIR" && SYTEST_PLUGINS="$here/plugins" MACHI_BINARY="$run/machi" \
	timeout -k 30 "${SYTEST_TIMEOUT:-5400}" perl run-tests.pl -I Machi -O tap --all \
	--work-directory "$run/work" -p "${SYTEST_PORTS:-28800:28899}" $args \
	>"$run/results.tap" 2>"$run/progress.log")
status=$?
set -e
echo "SyTest exited $status after $(($(date +%s) - start)) s"
for d in "$run"/work/server-*; do
	[ -f "$d/machi.log" ] && cp "$d/machi.log" "$run/$(basename "$d").log"
done

perl "$here/tap.pl" summary "$run"
if [ "$full" = 1 ]; then
	perl "$here/tap.pl" check --full "$run" && ok=0 || ok=1
else
	perl "$here/tap.pl" check "$run" && ok=0 || ok=1
fi
if [ "$update" = 1 ]; then
	perl "$here/tap.pl" update "$run"
fi
exit $ok
