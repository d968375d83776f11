#!/usr/bin/env bash
# Does an unreachable trace collector slow calls down or grow memory?
# Runs two tethers in front of one mock upstream, one exporting spans to a
# dead OTLP endpoint and one with tracing off, drives both with short calls
# (tether talk in a loop) and measures voice-rate latency on both in the same
# run (tether-bench, in turns). Loopback only; stops by itself (about 5 min).
#   usage: bash cmd/tether-bench/collector-down.sh [seconds]   (default 300)
#   TETHER, TETHER_BENCH: the binaries (default: bin/tether, bin/tether-bench, built if absent)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-300}
T=${TETHER:-bin/tether}
[ -x "$T" ] || go build -o bin/tether ./cmd/tether
B=${TETHER_BENCH:-bin/tether-bench}
[ -x "$B" ] || (cd cmd/tether-bench && go build -o ../../bin/tether-bench .)
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
cat > "$dir/off.yaml" <<'YAML'
server: {listen: "127.0.0.1:18080"}
admin: {listen: "127.0.0.1:19080"}
upstreams: [{name: mock, type: mock, url: "ws://127.0.0.1:18081/v1/realtime"}]
log: {level: warn}
YAML
cat > "$dir/down.yaml" <<'YAML'
server: {listen: "127.0.0.1:18090"}
admin: {listen: "127.0.0.1:19090"}
upstreams: [{name: mock, type: mock, url: "ws://127.0.0.1:18081/v1/realtime"}]
telemetry: {traces: {exporter: otlp, endpoint: "127.0.0.1:1", protocol: grpc, insecure: true}}
log: {level: warn}
YAML
"$T" mock-upstream --listen 127.0.0.1:18081 --log-level warn & pids+=($!)
"$T" serve --config "$dir/off.yaml" 2>"$dir/off.log" & off=$!; pids+=($off)
"$T" serve --config "$dir/down.yaml" 2>"$dir/down.log" & down=$!; pids+=($down)
sleep 2
rss() { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$1/status"; }
echo "rss at start: tracing off $(rss $off), collector down $(rss $down)"
calls() { local url=$1 end=$((SECONDS+secs)) n=0; while [ $SECONDS -lt $end ]; do "$T" talk --url "$url" >/dev/null 2>&1 && n=$((n+1)); done; echo "$n"; }
calls 'ws://127.0.0.1:18080/v1/realtime?model=gpt-realtime' > "$dir/calls_off" & pids+=($!)
calls 'ws://127.0.0.1:18090/v1/realtime?model=gpt-realtime' > "$dir/calls_down" & pids+=($!)
"$B" --url ws://127.0.0.1:18090/v1/realtime --name collector_down --pid collector_down=$down \
  --compare tracing_off=ws://127.0.0.1:18080/v1/realtime --pid tracing_off=$off \
  --baseline ws://127.0.0.1:18081/v1/realtime --sessions 100 --rate 50 --ramp 5s --duration $((secs*45/100))s
wait "${pids[3]}" "${pids[4]}"
echo "calls: tracing off $(cat "$dir/calls_off"), collector down $(cat "$dir/calls_down")"
echo "rss at end: tracing off $(rss $off), collector down $(rss $down)"
curl -s 127.0.0.1:19090/metrics | grep '^tether_spans_dropped_total' || true
