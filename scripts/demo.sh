#!/usr/bin/env bash
# The main demo: a group VPN of five members, each in its own network
# namespace on one bridge (standing for five hosts on a LAN), each running
# `ringvpn up` with a TAP device. It makes a group CA and the members'
# certificates, waits for the ring, pings every pair through the VPN, sends
# a file over TCP and checks its SHA-256, prints one member's status, and
# removes everything it made (also on failure or Ctrl-C).
#
# Needs root (namespaces and TAP devices); installs iputils-ping and
# netcat-openbsd when missing. `scripts/ring-demo.sh` shows the ring alone,
# on loopback, without root.
#
#	BIN=bin/ringvpn     the binary (`make demo` builds it)
#	DEMO_MEMBERS=5      how many members (4..20)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/netns.sh

BIN=${BIN:-bin/ringvpn}
N=${DEMO_MEMBERS:-5}
PORT=4820
VIP=10.77.0 # member i has $VIP.i/24

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: the VPN demo runs members in network namespaces with TAP devices, which needs root: run 'sudo make demo'" >&2
	echo "demo: (without root, 'scripts/ring-demo.sh' shows the ring on loopback; a user-space mode comes later)" >&2
	exit 1
fi
[ -x "$BIN" ] || { echo "demo: $BIN missing; run 'make demo' (it builds first)" >&2; exit 1; }
[ -c /dev/net/tun ] || { echo "demo: no /dev/net/tun: load the tun module (modprobe tun)" >&2; exit 1; }
[ "$N" -ge 4 ] && [ "$N" -le 20 ] || { echo "demo: DEMO_MEMBERS=$N not in [4,20]" >&2; exit 1; }
apt_install ping:iputils-ping nc:netcat-openbsd

BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
work=$(mktemp -d /tmp/ringvpn-demo.XXXXXX)
cleanup() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "demo: failed; the members' last log lines:" >&2
		for f in "$work"/m*.log; do [ -f "$f" ] && tail -5 "$f" | sed "s|^|$(basename "$f" .log): |" >&2; done
	fi
	lab_down
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "a group CA and $N member certificates"
"$BIN" ca init --name demo-group-ca --cert "$work/ca.crt" --key "$work/ca.key" --validity 24h
for i in $(seq 1 "$N"); do
	"$BIN" cert issue --ca-cert "$work/ca.crt" --ca-key "$work/ca.key" --name "m$i" \
		--ip "$VIP.$i/24" --validity 12h --cert "$work/m$i.crt" --key "$work/m$i.key" > /dev/null
done
"$BIN" cert show "$work/m1.crt"

say "$N namespaces on one bridge, one member in each, joining through m1"
lab_up "$N"
for i in $(seq 1 "$N"); do
	boot=""
	[ "$i" -eq 1 ] || boot="\"$(lab_ip 1):$PORT\""
	cat > "$work/m$i.yaml" <<-YAML
		identity: {cert: $work/m$i.crt, key: $work/m$i.key, ca: $work/ca.crt}
		listen: "$(lab_ip "$i"):$PORT"
		control: {socket: $work/m$i.sock}
		overlay: {bootstrap: [$boot], maintain_interval: 250ms, ping_interval: 500ms, dead_after: 2s}
		tap: {name: rv0}
	YAML
	lab_start "h$i" "$work/m$i.log" "$BIN" up --config "$work/m$i.yaml"
	echo "m$i: $(lab_ip "$i"):$PORT, virtual IP $VIP.$i on rv0"
done

say "waiting for the ring"
deadline=$((SECONDS + 30))
while :; do
	in=0
	for i in $(seq 1 "$N"); do
		"$BIN" status --json --socket "$work/m$i.sock" 2> /dev/null | grep -q '"in_ring": true' && in=$((in + 1))
	done
	[ "$in" -eq "$N" ] && break
	[ "$SECONDS" -lt "$deadline" ] || { echo "demo: only $in of $N members in the ring after 30s" >&2; exit 1; }
	sleep 0.3
done
echo "all $N members are in the ring"

say "ping every pair through the VPN"
for a in $(seq 1 "$N"); do
	line="m$a ->"
	for b in $(seq 1 "$N"); do
		[ "$a" -ne "$b" ] || continue
		ok=
		for _ in 1 2 3 4 5; do # the first packets may wait for a DHT lookup
			if out=$(lab_exec "h$a" ping -c 1 -W 2 -q "$VIP.$b" 2>&1); then ok=1; break; fi
		done
		[ -n "$ok" ] || { echo "demo: m$a cannot ping m$b ($VIP.$b): $out" >&2; exit 1; }
		ms=$(printf '%s\n' "$out" | sed -n 's|^rtt [^=]*= \([0-9.]*\)/.*|\1|p')
		line="$line m$b ${ms}ms"
	done
	echo "$line"
done

say "32 MiB over TCP from m1 to m$N, checked with SHA-256"
head -c $((32 << 20)) /dev/urandom > "$work/payload"
sent=$(sha256sum < "$work/payload" | cut -d' ' -f1)
lab_start "h$N" "$work/nc.log" sh -c "nc -l $VIP.$N 5001 | sha256sum > $work/received.sum"
for _ in $(seq 1 50); do
	lab_exec "h$N" ss -Hltn 'sport = :5001' | grep -q . && break
	sleep 0.1
done
start=$(date +%s.%N)
lab_exec h1 timeout 60 nc -N "$VIP.$N" 5001 < "$work/payload"
for _ in $(seq 1 100); do
	[ -s "$work/received.sum" ] && break
	sleep 0.1
done
end=$(date +%s.%N)
received=$(cut -d' ' -f1 < "$work/received.sum" 2> /dev/null || true)
echo "sent     $sent"
echo "received $received"
[ "$sent" = "$received" ] || { echo "demo: the transfer arrived damaged or incomplete" >&2; exit 1; }
awk -v s="$start" -v e="$end" 'BEGIN { printf "checksums match; %.0f Mbit/s\n", 32 * 8 * 1.048576 / (e - s) }'

say "ringvpn status (m1)"
"$BIN" status --socket "$work/m1.sock"

say "done: stopping the members and removing the namespaces"
