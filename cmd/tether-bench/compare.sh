#!/usr/bin/env bash
# cmd/tether-bench/compare.sh: the same open-loop voice load against
# tether's mock upstream directly, through nginx (a plain WebSocket reverse
# proxy), through HAProxy (1 thread, a plain mode http WebSocket tunnel) and
# through tether, measured in one tether-bench run (Realtime shape: targets
# take turns of --slot; GPT-Live shape: one after another), printed side by
# side with tether/nginx, tether/haproxy and tether/best-C-proxy ratios.
#
#   bash cmd/tether-bench/compare.sh           # 500 sessions x 50 frames/s x 1350 B, 20 s each
#   bash cmd/tether-bench/compare.sh --sessions 100 --duration 10s --plot-added added.png
#   bash cmd/tether-bench/compare.sh --shape live --sessions 1000 --duration 10s
#
# Extra arguments go to tether-bench and override the defaults. Environment:
#   TETHER        tether binary to use (default: built from this checkout)
#   TETHER_BENCH  tether-bench binary to use (default: built from this checkout)
#   NGINX         nginx binary (default: nginx on PATH; installed from Debian if absent)
#   HAPROXY       haproxy binary (default: haproxy on PATH; installed from Debian if absent)
# Every process started here is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d /tmp/tether-compare.XXXXXX)"
pids=()

# cleanup stops what this script started, the last started first (the bench,
# then tether, nginx and the mock), each with TERM and, after 5 s, KILL.
cleanup() {
	local status=$? i pid
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid="${pids[i]}"
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# await_listening NAME PID PORT LOG waits (10 s) until PID listens on PORT,
# else shows LOG and exits.
await_listening() {
	local name=$1 pid=$2 port=$3 log=$4
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	say "$name did not start:"
	cat "$log" >&2
	exit 1
}

say() { echo "compare: $*" >&2; }

# wait_line FILE PATTERN: wait (up to 15 s) for a line matching PATTERN in FILE.
wait_line() {
	for _ in $(seq 150); do
		if grep -q -- "$2" "$1" 2>/dev/null; then
			grep -m1 -- "$2" "$1"
			return 0
		fi
		sleep 0.1
	done
	say "timed out waiting for '$2' in $1:"
	cat "$1" >&2 || true
	return 1
}

# free_port: a loopback TCP port nothing listens on.
free_port() {
	local port
	for _ in $(seq 100); do
		port=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	return 1
}

# tether: build it from this checkout unless given.
tether="${TETHER:-}"
if [ -z "$tether" ]; then
	say "building tether"
	(cd "$root" && go build -trimpath -o "$work/tether" ./cmd/tether)
	tether="$work/tether"
fi

# tether-bench: its own module (cmd/tether-bench), built unless given.
bench="${TETHER_BENCH:-}"
if [ -z "$bench" ]; then
	say "building tether-bench"
	(cd "$here" && go build -trimpath -o "$work/tether-bench" .)
	bench="$work/tether-bench"
fi

# apt_install PACKAGE...: install from Debian without letting the package
# start a system service of its own (the first package that installs wins).
apt_install() {
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		say "$1 is not installed; install it (Debian: apt-get install $1) or set its variable"
		exit 1
	fi
	say "installing $1 from Debian"
	local policy="" p
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		policy=/usr/sbin/policy-rc.d
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	for p in "$@"; do
		apt-get install -y -qq "$p" >&2 && break
	done
	[ -n "$policy" ] && rm -f "$policy"
	return 0
}

# nginx and haproxy: from PATH (or /usr/sbin), else from Debian.
nginx="${NGINX:-$(command -v nginx || true)}"
if [ -z "$nginx" ] && [ -x /usr/sbin/nginx ]; then
	nginx=/usr/sbin/nginx
fi
if [ -z "$nginx" ]; then
	apt_install nginx-light nginx
	nginx=/usr/sbin/nginx
fi
say "$("$nginx" -v 2>&1)"
haproxy="${HAPROXY:-$(command -v haproxy || true)}"
if [ -z "$haproxy" ] && [ -x /usr/sbin/haproxy ]; then
	haproxy=/usr/sbin/haproxy
fi
if [ -z "$haproxy" ]; then
	apt_install haproxy
	haproxy=/usr/sbin/haproxy
fi
say "$("$haproxy" -v 2>&1 | head -1)"

# The load shape (--shape live: GPT-Live calls on /v1/live/sessions).
path="/v1/realtime?model=gpt-realtime"
prev=""
for a in "$@"; do
	if [ "$a" = "--shape=live" ] || { [ "$prev" = "--shape" ] && [ "$a" = live ]; }; then
		path="/v1/live/sessions"
	fi
	prev="$a"
done

# Sessions need two descriptors each in every proxy (root may raise the hard limit).
ulimit -Hn 200000 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile="$(ulimit -n)"

# 1. The mock upstream, in echo-capable form.
"$tether" mock-upstream --listen 127.0.0.1:0 --log-level info 2>"$work/mock.log" &
pids+=($!)
mock_url="$(wait_line "$work/mock.log" 'mock upstream listening' | sed -n 's/.* url=\([^ ]*\).*/\1/p')"
mock_hostport="${mock_url#ws://}"
mock_hostport="${mock_hostport%%/*}"
say "mock upstream at $mock_url"

# 2. nginx in front of it.
mkdir -p "$work/nginx/tmp" "$work/nginx/logs"
nginx_port="$(free_port)"
sed -e "s|@PREFIX@|$work/nginx|g" -e "s|@LISTEN@|127.0.0.1:$nginx_port|g" -e "s|@UPSTREAM@|$mock_hostport|g" \
	-e "s|@NOFILE@|$nofile|g" \
	"$here/nginx.conf.tmpl" >"$work/nginx/nginx.conf"
"$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" -t >/dev/null 2>"$work/nginx-t.log" || {
	cat "$work/nginx-t.log" >&2
	exit 1
}
"$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>>"$work/nginx/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
await_listening nginx "$nginx_pid" "$nginx_port" "$work/nginx/error.log"
say "nginx (master pid $nginx_pid) at 127.0.0.1:$nginx_port"

# 2b. HAProxy in front of it (one thread, foreground).
mkdir -p "$work/haproxy"
haproxy_port="$(free_port)"
sed -e "s|@PREFIX@|$work/haproxy|g" -e "s|@LISTEN@|127.0.0.1:$haproxy_port|g" -e "s|@UPSTREAM@|$mock_hostport|g" \
	-e "s|@MAXCONN@|$(((nofile - 100) / 2))|g" \
	"$here/haproxy.cfg.tmpl" >"$work/haproxy/haproxy.cfg"
"$haproxy" -c -q -f "$work/haproxy/haproxy.cfg" >"$work/haproxy-c.log" 2>&1 || {
	cat "$work/haproxy-c.log" >&2
	exit 1
}
"$haproxy" -db -f "$work/haproxy/haproxy.cfg" 2>"$work/haproxy/stderr.log" &
haproxy_pid=$!
pids+=("$haproxy_pid")
await_listening haproxy "$haproxy_pid" "$haproxy_port" "$work/haproxy/stderr.log"
say "haproxy (pid $haproxy_pid) at 127.0.0.1:$haproxy_port"

# 3. tether in front of the same mock.
sed -e "s|@MAX_SESSIONS@|60000|" -e "s|@MOCK_URL@|$mock_url|" "$here/internal/bench/tether.yaml.tmpl" >"$work/tether.yaml"
"$tether" serve --config "$work/tether.yaml" 2>"$work/tether.log" &
tether_pid=$!
pids+=("$tether_pid")
started="$(wait_line "$work/tether.log" '"tether started"')"
tether_listen="$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' <<<"$started")"
tether_admin="$(sed -n 's/.*"admin":"\([^"]*\)".*/\1/p' <<<"$started")"
say "tether (pid $tether_pid) at $tether_listen, admin $tether_admin"

# The Realtime shape's default load (the GPT-Live shape has its own frames).
load=(--rate 50 --frame-bytes 1350)
[ "$path" = /v1/live/sessions ] && load=()

# 4. One run, four targets (in turns, or one after another for --shape live). It runs in the background so that a
# signal to this script is handled at once (cleanup stops it first).
say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" \
	--url "ws://$tether_listen$path" --name tether \
	--pid "tether=$tether_pid" --admin "tether=$tether_admin" \
	--baseline "ws://$mock_hostport$path" \
	--compare "nginx=ws://127.0.0.1:$nginx_port$path" --pid "nginx=$nginx_pid" \
	--compare "haproxy=ws://127.0.0.1:$haproxy_port$path" --pid "haproxy=$haproxy_pid" \
	--sessions 500 "${load[@]}" --ramp 10s --duration 20s --slot 1s \
	"$@" &
pids+=($!)
wait "$!"
