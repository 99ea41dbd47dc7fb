#!/usr/bin/env bash
# The TAP measurement of the README, in one run (root, wrk installed):
# `loopbench tap`, which
#
#   1. measures keep-alive requests/s, `wrk -t1 -c64`, against usertcp's
#      HTTP server (the http_server example's code) on a TAP, wrk inside the
#      namespace, and against the same server on kernel sockets with kernel
#      epoll on 127.0.0.1 (`http_server --kernel`), rounds alternating; and
#      against usertcp's threaded mode (`http_server --threads 2`) on a
#      second TAP;
#   2. measures bulk Gbit/s: a kernel client sends 100 MB to usertcp's echo
#      server on the TAP and checks the echo, against the kernel's echo
#      server on 127.0.0.1.
#
#   sudo scripts/tap-bench.sh                     # 3 rounds of 5 s per side
#   sudo scripts/tap-bench.sh --quick             # 1 round of 1 s, 10 MB
#   sudo scripts/tap-bench.sh --json tap.json     # also the JSON report
#
# The namespace is its own (utcp-bench-PID) and is removed at the end, also
# on failure; every wrk run is bounded and killed if it overruns. Traffic
# stays on 127.0.0.1 and inside the namespace. The examples themselves are
# run by hand as their headers and the README show.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tap-bench.sh: must run as root (a network namespace and TAP devices); try: sudo $0 $*" >&2
    exit 1
fi
command -v wrk >/dev/null || { echo "tap-bench.sh: wrk is not installed" >&2; exit 1; }
cargo build --release -p loopbench
exec target/release/loopbench tap "$@"
