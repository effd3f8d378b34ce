#!/usr/bin/env bash
# The local demo: six ringvpn members on loopback, one UDP socket each,
# authenticating each other with certificates from one group CA, join
# through one bootstrap member and form the ring; one is killed and the
# others heal around it; a rogue member from another CA is refused.
# Everything it makes lives in a temporary directory removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/ringvpn}
[ -x "$BIN" ] || { echo "demo: $BIN missing; run 'make demo' (it builds first)" >&2; exit 1; }
work=$(mktemp -d /tmp/ringvpn-demo.XXXXXX)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

N=6
say "a group CA and $N member certificates"
"$BIN" ca init --name demo-group --cert "$work/ca.crt" --key "$work/ca.key" --validity 24h
for i in $(seq 1 $N); do
	"$BIN" cert issue --ca-cert "$work/ca.crt" --ca-key "$work/ca.key" --name "node$i" \
		--ip "10.77.0.$i/24" --group demo --validity 12h \
		--cert "$work/node$i.crt" --key "$work/node$i.key"
done
"$BIN" cert show "$work/node1.crt"

base=$((20000 + RANDOM % 20000))
config() { # name port bootstrap
	local name=$1 port=$2 boot=$3
	{
		echo "identity: {cert: $work/$name.crt, key: $work/$name.key, ca: $work/ca.crt}"
		echo "listen: \"127.0.0.1:$port\""
		echo "control: {socket: $work/$name.sock}"
		echo "vpn: {enabled: false}"
		echo "overlay: {bootstrap: [$boot], near: 2, maintain_interval: 250ms, ping_interval: 500ms, dead_after: 2s}"
	} > "$work/$name.yaml"
}
config node1 $((base + 1)) ""
for i in $(seq 2 $N); do config "node$i" $((base + i)) "\"127.0.0.1:$((base + 1))\""; done

say "$N members on loopback join through node1 (logs in $work/node*.log)"
for i in $(seq 1 $N); do
	"$BIN" up --config "$work/node$i.yaml" > "$work/node$i.log" 2>&1 &
	pids+=($!)
done

# The ring is right when every member's two nearest nodes on each side are
# its near links: ring_ok checks that from every member's status.
ring_ok() { # members...
	local m addrs sorted i n j d want
	addrs=()
	for m in "$@"; do addrs+=("$("$BIN" status --socket "$work/$m.sock" --json 2>/dev/null | grep -m1 '"address"' | cut -d'"' -f4)"); done
	mapfile -t sorted < <(printf '%s\n' "${addrs[@]}" | sort)
	n=${#sorted[@]}
	for m in "$@"; do
		local st; st=$("$BIN" status --socket "$work/$m.sock" --json 2>/dev/null) || return 1
		local self; self=$(echo "$st" | grep -m1 '"address"' | cut -d'"' -f4)
		for i in $(seq 0 $((n - 1))); do [ "${sorted[$i]}" = "$self" ] && break; done
		for d in 1 2; do
			for j in $(( (i + d) % n )) $(( (i - d + n) % n )); do
				want=${sorted[$j]}
				echo "$st" | tr -d ' \n' | grep -q "\"address\":\"$want\",\"kind\":\"[a-z+]*near" || return 1
			done
		done
	done
}
members=(); for i in $(seq 1 $N); do members+=("node$i"); done
ms() { date +%s%3N; }
start=$(ms)
for _ in $(seq 1 150); do ring_ok "${members[@]}" && break; sleep 0.2; done
ring_ok "${members[@]}" || { echo "demo: the ring did not form" >&2; tail -20 "$work/node1.log" >&2; exit 1; }
echo "ring correct after $(( $(ms) - start )) ms"
sleep 1 # a few pings for the RTT column
say "ringvpn status (node1)"
"$BIN" status --socket "$work/node1.sock"

say "node1, the bootstrap, is killed without a goodbye; the others heal the ring"
kill -KILL "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
rest=("${members[@]:1}")
start=$(ms)
for _ in $(seq 1 150); do ring_ok "${rest[@]}" && break; sleep 0.2; done
ring_ok "${rest[@]}" || { echo "demo: the ring did not heal" >&2; exit 1; }
echo "ring healed after $(( $(ms) - start )) ms"
"$BIN" status --socket "$work/node2.sock"

say "a diagnostic probe opens 20 sessions to node2 over its own socket and pings through them"
# The probe is a member of its own: a node keeps one link per member, so
# sessions under a running member's name would replace that member's link.
"$BIN" cert issue --ca-cert "$work/ca.crt" --ca-key "$work/ca.key" --name prober \
	--ip 10.77.0.99/24 --validity 1h --cert "$work/prober.crt" --key "$work/prober.key"
cat > "$work/probe.yaml" <<YAML
identity: {cert: $work/prober.crt, key: $work/prober.key, ca: $work/ca.crt}
listen: "127.0.0.1:0"
YAML
"$BIN" probe --log-level warn --config "$work/probe.yaml" --sessions 20 --count 3 "127.0.0.1:$((base + 2))"

say "a member whose certificate comes from another CA is refused"
"$BIN" ca init --name rogue-ca --cert "$work/rogue-ca.crt" --key "$work/rogue-ca.key" --validity 24h
"$BIN" cert issue --ca-cert "$work/rogue-ca.crt" --ca-key "$work/rogue-ca.key" --name mallory \
	--ip 10.77.0.66/24 --validity 12h --cert "$work/mallory.crt" --key "$work/mallory.key"
cat "$work/ca.crt" "$work/rogue-ca.crt" > "$work/both.crt"
cat > "$work/mallory.yaml" <<YAML
identity: {cert: $work/mallory.crt, key: $work/mallory.key, ca: $work/both.crt}
listen: "127.0.0.1:0"
security: {handshake_timeout: 3s}
YAML
if "$BIN" probe --log-level warn --config "$work/mallory.yaml" --sessions 1 --count 1 "127.0.0.1:$((base + 2))"; then
	echo "demo: the rogue member was NOT refused" >&2; exit 1
fi
echo "node2's log says:"
grep 'peer refused' "$work/node2.log" | tail -1

say "node3 shuts down cleanly; its peers are told at once"
kill -TERM "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
sleep 0.5
"$BIN" status --socket "$work/node2.sock"
say "demo finished"
