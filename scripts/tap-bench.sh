#!/usr/bin/env bash
# The TAP measurement of the README, in one run (root, wrk installed):
#
#   1. keep-alive requests/s, `wrk -t1 -c64 -d10s`, against http_server on
#      usertcp through a TAP (wrk inside the namespace) and against the same
#      example with --kernel on 127.0.0.1, interleaved ROUNDS times;
#   2. bulk Gbit/s: a kernel client (echo_client --kernel) sends BULK bytes
#      to echo_server on the TAP and checks the echo, ROUNDS times.
#
#   sudo scripts/tap-bench.sh            # ROUNDS=3 BULK=200000000 by default
#
# The namespace is its own (utcp-bench-PID) and is removed at the end, also
# on failure or Ctrl-C. Traffic stays on 127.0.0.1 and inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
BULK=${BULK:-200000000}
DURATION=${DURATION:-10s}
export USERTCP_NETNS=utcp-bench-$$
R=target/release/examples
PORT=18080

command -v wrk >/dev/null || { echo "tap-bench.sh: wrk is not installed" >&2; exit 1; }
cargo build --release --example http_server --example echo_server --example echo_client

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/netns-tap.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
scripts/netns-tap.sh up

rate() { grep -E "^Requests/sec" | awk '{print $2}'; }
errors() { grep -E "Socket errors" || true; }

scripts/netns-tap.sh exec "$R/http_server" --tap tap0 >/dev/null 2>&1 &
pids+=($!)
"$R/http_server" --kernel --port "$PORT" >/dev/null 2>&1 &
pids+=($!)
sleep 1
echo "machine: $(nproc) cores, $(uname -r), load: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$ROUNDS"); do
    k=$(timeout 60 wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:$PORT/")
    t=$(scripts/netns-tap.sh exec timeout 60 wrk -t1 -c64 -d"$DURATION" http://198.18.0.2/)
    kr=$(echo "$k" | rate)
    tr=$(echo "$t" | rate)
    echo "round $i: usertcp TAP $tr req/s, kernel 127.0.0.1 $kr req/s, ratio $(awk "BEGIN{printf \"%.2f\", $tr/$kr}") $(echo "$t" | errors) $(echo "$k" | errors)"
done
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
pids=()

scripts/netns-tap.sh exec "$R/echo_server" --tap tap0 >/dev/null 2>&1 &
pids+=($!)
sleep 1
for i in $(seq "$ROUNDS"); do
    echo -n "bulk $i: "
    scripts/netns-tap.sh exec timeout 120 "$R/echo_client" --kernel --connect 198.18.0.2:7 --bytes "$BULK"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
