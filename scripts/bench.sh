#!/usr/bin/env bash
# The performance report: TCP throughput (iperf3, 1 and 4 streams) and ping
# RTT between two network namespaces, first over the raw veth underlay,
# then through two ringvpn members' TAP devices, measured in one run on one
# machine so the ratios mean something. Needs root; installs iperf3 and
# iputils-ping when missing (Debian).
#
#	BENCH_TIME=10          seconds per iperf3 run
#	RINGVPN=bin/ringvpn    the binary (built with `make build` when missing)
#	BENCH_REQUIRE_VPN=1    fail, instead of skipping, when the VPN won't come up
#
# Everything it makes (namespaces, processes, a temporary directory) is
# removed at exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/netns.sh

BENCH_TIME=${BENCH_TIME:-10}
RINGVPN=${RINGVPN:-bin/ringvpn}
PORT=4820           # ringvpn's UDP port on the underlay
VIP_NET=10.99.0     # the members' virtual IPs: .1 and .2
UP_TIMEOUT=15       # seconds for the VPN to come up

need_root
apt_install iperf3 ping:iputils-ping ss:iproute2
work=$(mktemp -d /tmp/ringvpn-bench.XXXXXX)
cleanup() {
	lab_down
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# received_bps reads iperf3 -J output and prints end.sum_received's
# bits_per_second (the receiver's total over all streams).
received_bps() {
	awk '/"sum_received"[[:space:]]*:/ { f = 1 }
		f && /"bits_per_second"[[:space:]]*:/ {
			v = $0
			sub(/.*"bits_per_second"[[:space:]]*:[[:space:]]*/, "", v)
			sub(/[^0-9.eE+-].*/, "", v)
			print v
			exit
		}'
}

# iperf ADDR STREAMS prints the Mbit/s host 1 sends to ADDR in host 2.
iperf() {
	local addr=$1 streams=$2 out bps
	if ! out=$(lab_exec h1 timeout $((BENCH_TIME + 30)) iperf3 -c "$addr" -t "$BENCH_TIME" -P "$streams" -J 2>&1); then
		echo "bench: iperf3 -c $addr -P $streams failed: $(printf '%s\n' "$out" | grep -m1 '"error"' || printf '%s\n' "$out" | tail -1)" >&2
		return 1
	fi
	bps=$(printf '%s\n' "$out" | received_bps)
	[ -n "$bps" ] || { echo "bench: no end.sum_received.bits_per_second in iperf3's output" >&2; return 1; }
	awk -v b="$bps" 'BEGIN { printf "%.1f\n", b / 1e6 }'
}

# rtt ADDR prints the average ping RTT in ms from host 1 to ADDR.
rtt() {
	local out avg
	out=$(lab_exec h1 ping -c 20 -i 0.05 -w 10 -q "$1" 2>&1) || { echo "bench: ping $1 failed: $out" >&2; return 1; }
	# rtt min/avg/max/mdev = 0.031/0.045/0.082/0.011 ms
	avg=$(printf '%s\n' "$out" | sed -n 's|^rtt [^=]*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
	[ -n "$avg" ] || { echo "bench: no RTT in ping's output: $out" >&2; return 1; }
	echo "$avg"
}

# measure ADDR LABEL sets <LABEL>_1, <LABEL>_4 (Mbit/s) and <LABEL>_rtt (ms).
measure() {
	local addr=$1 label=$2 one four ms
	echo "ping $addr"
	ms=$(rtt "$addr")
	echo "iperf3 -c $addr -t $BENCH_TIME"
	one=$(iperf "$addr" 1)
	echo "iperf3 -c $addr -t $BENCH_TIME -P 4"
	four=$(iperf "$addr" 4)
	printf -v "${label}_rtt" '%s' "$ms"
	printf -v "${label}_1" '%s' "$one"
	printf -v "${label}_4" '%s' "$four"
}

say "two namespaces on a bridge, iperf3 server in h2"
lab_up 2
lab_start h2 "$work/iperf3.log" iperf3 -s
for _ in $(seq 1 50); do
	lab_exec h2 ss -Hltn 'sport = :5201' | grep -q . && break
	sleep 0.1
done

say "the raw underlay: $(lab_ip 1) -> $(lab_ip 2)"
measure "$(lab_ip 2)" raw

# vpn_up starts two members and waits until both answer status and a ping
# crosses the VPN; on failure it sets skip to the reason.
skip=
vpn_up() {
	local i boot out
	if [ ! -x "$RINGVPN" ]; then
		if [ "$RINGVPN" != bin/ringvpn ]; then
			skip="RINGVPN=$RINGVPN is not an executable"
			return 1
		fi
		echo "building $RINGVPN"
		make build > "$work/build.log" 2>&1 || { skip="make build failed: $(tail -1 "$work/build.log")"; return 1; }
	fi
	RINGVPN=$(cd "$(dirname "$RINGVPN")" && pwd)/$(basename "$RINGVPN")
	[ -c /dev/net/tun ] || { skip="no /dev/net/tun"; return 1; }
	out=$("$RINGVPN" ca init --name benchca --cert "$work/ca.crt" --key "$work/ca.key" --validity 24h 2>&1) ||
		{ skip="ringvpn ca init failed: $out"; return 1; }
	for i in 1 2; do
		out=$("$RINGVPN" cert issue --ca-cert "$work/ca.crt" --ca-key "$work/ca.key" --name "m$i" \
			--ip "$VIP_NET.$i/24" --validity 12h --cert "$work/m$i.crt" --key "$work/m$i.key" 2>&1) ||
			{ skip="ringvpn cert issue failed: $out"; return 1; }
		boot=""
		[ "$i" -eq 1 ] || boot="\"$(lab_ip 1):$PORT\""
		{
			echo "identity: {cert: $work/m$i.crt, key: $work/m$i.key, ca: $work/ca.crt}"
			echo "listen: \"$(lab_ip "$i"):$PORT\""
			echo "control: {socket: $work/m$i.sock}"
			echo "overlay: {bootstrap: [$boot], maintain_interval: 250ms, ping_interval: 500ms}"
			echo "tap: {name: rv0}"
		} > "$work/m$i.yaml"
		lab_start "h$i" "$work/m$i.log" "$RINGVPN" up --config "$work/m$i.yaml"
		pids[i]=$LAB_LAST_PID
	done
	local deadline=$((SECONDS + UP_TIMEOUT)) status=0
	while [ "$SECONDS" -lt "$deadline" ]; do
		for i in 1 2; do
			kill -0 "${pids[i]}" 2> /dev/null ||
				{ skip="ringvpn up (m$i) exited: $(grep -v '^[[:space:]]*$' "$work/m$i.log" | tail -1)"; return 1; }
		done
		status=0
		for i in 1 2; do
			"$RINGVPN" status --socket "$work/m$i.sock" > /dev/null 2>&1 || status=1
		done
		if [ "$status" -eq 0 ] && lab_exec h1 ping -c 1 -W 1 -q "$VIP_NET.2" > /dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	if [ "$status" -ne 0 ]; then
		skip="not up within ${UP_TIMEOUT}s: ringvpn status fails"
	else
		skip="not up within ${UP_TIMEOUT}s: no ping through $VIP_NET.2"
	fi
	for i in 1 2; do tail -5 "$work/m$i.log" | sed "s/^/m$i: /" >&2; done
	return 1
}

say "through the VPN: $VIP_NET.1 -> $VIP_NET.2"
pids=()
if vpn_up; then
	measure "$VIP_NET.2" vpn
else
	echo "VPN part skipped: $skip"
	[ -z "${BENCH_REQUIRE_VPN:-}" ] || exit 1
	vpn_1=- vpn_4=- vpn_rtt=-
fi

# with V UNIT prints "V UNIT", or - when V is missing.
with() { if [ "$1" = - ]; then echo -; else echo "$1 $2"; fi; }
# ratio A B prints A/B, or - when either is missing.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%+.3f ms\n", a - b }'; }

say "results (iperf3 -t $BENCH_TIME, host 1 -> host 2)"
row() { printf '%-15s %16s %16s %11s\n' "$@"; }
row "" raw VPN VPN/raw
row "TCP, 1 stream" "$(with "$raw_1" Mbit/s)" "$(with "$vpn_1" Mbit/s)" "$(ratio "$vpn_1" "$raw_1")"
row "TCP, 4 streams" "$(with "$raw_4" Mbit/s)" "$(with "$vpn_4" Mbit/s)" "$(ratio "$vpn_4" "$raw_4")"
row "ping RTT, avg" "$(with "$raw_rtt" ms)" "$(with "$vpn_rtt" ms)" "$(added "$vpn_rtt" "$raw_rtt")"
