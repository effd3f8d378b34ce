#!/usr/bin/env bash
# The local demo: three ringvpn members on loopback, one UDP socket each,
# authenticating each other with certificates from one group CA and
# exchanging sealed packets; a rogue member from another CA is refused.
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

say "a group CA and three member certificates"
"$BIN" ca init --name demo-group --cert "$work/ca.crt" --key "$work/ca.key" --validity 24h
for i in 1 2 3; do
	"$BIN" cert issue --ca-cert "$work/ca.crt" --ca-key "$work/ca.key" --name "node$i" \
		--ip "10.77.0.$i/24" --group demo --validity 12h \
		--cert "$work/node$i.crt" --key "$work/node$i.key"
done
"$BIN" cert show "$work/node1.crt"

base=$((20000 + RANDOM % 20000))
config() { # name port peers...
	local name=$1 port=$2; shift 2
	{
		echo "identity: {cert: $work/$name.crt, key: $work/$name.key, ca: $work/ca.crt}"
		echo "listen: \"127.0.0.1:$port\""
		echo "peers: [$(IFS=,; echo "$*")]"
		echo "control: {socket: $work/$name.sock}"
		echo "probe: {interval: 500ms}"
	} > "$work/$name.yaml"
}
config node1 $((base + 1))
config node2 $((base + 2)) "\"127.0.0.1:$((base + 1))\""
config node3 $((base + 3)) "\"127.0.0.1:$((base + 1))\"" "\"127.0.0.1:$((base + 2))\""

say "three members on loopback (logs in $work/node*.log)"
for i in 1 2 3; do
	"$BIN" up --config "$work/node$i.yaml" > "$work/node$i.log" 2>&1 &
	pids+=($!)
done

links() { "$BIN" status --socket "$work/$1.sock" --json 2>/dev/null | grep -o '"peer":' | wc -l; }
for _ in $(seq 1 100); do
	[ "$(links node1)" -ge 2 ] && [ "$(links node2)" -ge 2 ] && [ "$(links node3)" -ge 2 ] && break
	sleep 0.2
done
sleep 1.5 # a few probe rounds for the RTT column
for i in 1 2 3; do
	say "ringvpn status (node$i)"
	"$BIN" status --socket "$work/node$i.sock"
done
for i in 1 2 3; do
	[ "$(links node$i)" -ge 2 ] || { echo "demo: node$i did not link with both others" >&2; cat "$work/node$i.log" >&2; exit 1; }
done

say "node3 opens 20 more sessions to node1 over its own socket and pings through each"
cat > "$work/probe.yaml" <<YAML
identity: {cert: $work/node3.crt, key: $work/node3.key, ca: $work/ca.crt}
listen: "127.0.0.1:0"
YAML
"$BIN" probe --config "$work/probe.yaml" --sessions 20 --count 3 "127.0.0.1:$((base + 1))"

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
if "$BIN" probe --config "$work/mallory.yaml" --sessions 1 --count 1 "127.0.0.1:$((base + 1))"; then
	echo "demo: the rogue member was NOT refused" >&2; exit 1
fi
echo "node1's log says:"
grep 'peer refused' "$work/node1.log" | tail -1

say "node2 shuts down cleanly; its peers are told at once"
kill -TERM "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
sleep 0.5
"$BIN" status --socket "$work/node1.sock"
say "demo finished"
