# shellcheck shell=bash
# netns.sh: network-namespace labs for the demo and benchmark scripts;
# the bash counterpart of cmd/ringvpn/internal/netnstest. Source it:
#
#	. scripts/netns.sh
#	need_root
#	lab_traps                      # lab_down on exit, Ctrl-C or SIGTERM
#	lab_up 2                       # ${LAB_PREFIX}br + ${LAB_PREFIX}h1, h2
#	lab_exec h1 ping -c1 "$(lab_ip 2)"
#	lab_start h2 /tmp/h2.log some-daemon --flag; echo "pid $LAB_LAST_PID"
#
# A lab is one namespace holding a bridge (br0) and N host namespaces, each
# joined to the bridge by a veth pair; host i has 192.168.<x>.i/24 on eth0
# ($LAB_NET.i) and loopback up. Nothing leaves the namespaces. Every name
# starts with $LAB_PREFIX ("rvd<pid>-" by default), so lab_sweep can remove
# what a killed earlier run left behind.

LAB_PREFIX=${LAB_PREFIX:-rvd$$-}
LAB_DEV=eth0        # each host's underlay interface
LAB_NET=            # "192.168.<x>", set by lab_up
LAB_N=0             # hosts, set by lab_up
LAB_PIDS=()         # processes started by lab_start
LAB_LAST_PID=       # the last of them
LAB_APT_UPDATED=    # apt-get update ran
LAB_SHELL=$BASHPID  # the shell that owns the lab (see lab_down)

# need_root exits unless the script runs as root.
need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "run as root: network namespaces need CAP_SYS_ADMIN" >&2
		exit 1
	fi
}

# lab_traps runs lab_down when the script exits, and makes Ctrl-C and
# SIGTERM exit (a bare `trap lab_down INT` would clean up and then carry
# on with the script). Scripts that need more cleanup call lab_down from
# their own EXIT trap instead.
lab_traps() {
	trap lab_down EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# apt_install [CMD:]PKG... installs the Debian packages whose command is
# missing (CMD defaults to PKG: "iperf3 ping:iputils-ping"). It runs
# apt-get update once per script.
apt_install() {
	local spec cmd pkg missing=()
	for spec in "$@"; do
		pkg=${spec#*:}
		cmd=${spec%%:*}
		command -v "$cmd" > /dev/null 2>&1 || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "apt_install: ${missing[*]} missing; install it or run as root" >&2
		return 1
	fi
	if ! command -v apt-get > /dev/null 2>&1; then
		echo "apt_install: ${missing[*]} missing and no apt-get to install it" >&2
		return 1
	fi
	echo "installing ${missing[*]}" >&2
	if [ -z "$LAB_APT_UPDATED" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq > /dev/null || { echo "apt_install: apt-get update failed" >&2; return 1; }
		LAB_APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null ||
		{ echo "apt_install: apt-get install ${missing[*]} failed" >&2; return 1; }
}

# lab_ns HOST prints the namespace of HOST: "h1", "1" or a full name.
lab_ns() {
	_lab_ns "$1"
	echo "$LAB_NS"
}

# _lab_ns HOST sets LAB_NS to the namespace of HOST, without the fork of a
# command substitution.
_lab_ns() {
	case $1 in
	"$LAB_PREFIX"*) LAB_NS=$1 ;;
	h[0-9]*) LAB_NS=$LAB_PREFIX$1 ;;
	[0-9]*) LAB_NS=${LAB_PREFIX}h$1 ;;
	*) LAB_NS=$1 ;;
	esac
}

# lab_ip I prints host I's underlay address.
lab_ip() { echo "$LAB_NET.$1"; }

# lab_up N builds a lab of N hosts (1..253). LAB_SUBNET picks the third
# octet of 192.168.x.0/24 (default: from the pid).
lab_up() {
	local n=$1 br="${LAB_PREFIX}br" ns i
	need_root
	command -v ip > /dev/null 2>&1 || { echo "lab_up: the ip command is missing (apt-get install iproute2)" >&2; return 1; }
	[ "$n" -ge 1 ] && [ "$n" -le 253 ] || { echo "lab_up: $n hosts not in [1,253]" >&2; return 1; }
	lab_sweep
	LAB_NET="192.168.${LAB_SUBNET:-$(($$ % 250 + 2))}"
	LAB_N=$n
	ip netns add "$br"
	ip -n "$br" link set lo up
	ip -n "$br" link add br0 type bridge
	ip -n "$br" link set br0 up
	for ((i = 1; i <= n; i++)); do
		ns="${LAB_PREFIX}h$i"
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip -n "$br" link add "h$i" type veth peer name "$LAB_DEV" netns "$ns"
		ip -n "$br" link set "h$i" master br0 up
		ip -n "$ns" addr add "$LAB_NET.$i/24" dev "$LAB_DEV"
		ip -n "$ns" link set "$LAB_DEV" up
	done
}

# lab_exec HOST CMD... runs CMD in HOST's namespace.
lab_exec() {
	_lab_ns "$1"
	shift
	ip netns exec "$LAB_NS" "$@"
}

# lab_start HOST LOGFILE CMD... starts CMD in the background in HOST's
# namespace with stdout and stderr to LOGFILE; its pid is in LAB_LAST_PID
# and lab_down stops it.
lab_start() {
	local log=$2
	_lab_ns "$1"
	shift 2
	ip netns exec "$LAB_NS" "$@" > "$log" 2>&1 &
	LAB_LAST_PID=$!
	LAB_PIDS+=("$LAB_LAST_PID")
}

# lab_stop PID sends SIGTERM, waits up to 5 s, then sends SIGKILL.
lab_stop() {
	local pid=$1 i
	kill -TERM "$pid" 2> /dev/null || return 0
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2> /dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2> /dev/null || true
	{ wait "$pid"; } 2> /dev/null || true
}

# lab_kill_ns NS kills every process in namespace NS and deletes it.
lab_kill_ns() {
	local ns=$1 pids i
	for i in 1 2 3 4 5; do
		pids=$(ip netns pids "$ns" 2> /dev/null | grep -vx "$$" || true)
		[ -n "$pids" ] || break
		# shellcheck disable=SC2086 # a list of pids
		kill -KILL $pids 2> /dev/null || true
		sleep 0.1
	done
	ip netns del "$ns" 2> /dev/null || [ ! -e "/run/netns/$ns" ]
}

# lab_down stops the processes lab_start started, kills whatever else runs
# in the lab, and deletes its namespaces. Running it twice is harmless. It
# does nothing in a subshell: bash sometimes runs the EXIT trap in one
# (a command substitution forked while the trap runs, or a background job
# signalled before its exec), and that copy must not tear the lab down
# under the shell that owns it.
lab_down() {
	local pid ns
	[ "$BASHPID" = "$LAB_SHELL" ] || return 0
	for pid in "${LAB_PIDS[@]}"; do lab_stop "$pid" || true; done
	LAB_PIDS=()
	for ns in /run/netns/"$LAB_PREFIX"*; do
		[ -e "$ns" ] || continue
		lab_kill_ns "${ns##*/}" || echo "lab_down: could not delete namespace ${ns##*/}" >&2
	done
	return 0
}

# lab_sweep deletes the namespaces of earlier runs that are gone: names
# "rvd<pid>-..." whose pid is not alive.
lab_sweep() {
	local ns name pid
	for ns in /run/netns/rvd*; do
		[ -e "$ns" ] || continue
		name=${ns##*/}
		pid=${name#rvd}
		pid=${pid%%-*}
		case $pid in '' | *[!0-9]*) continue ;; esac
		[ "$pid" = "$$" ] && continue
		kill -0 "$pid" 2> /dev/null && continue
		echo "lab_sweep: removing $name, left by process $pid" >&2
		lab_kill_ns "$name" || echo "lab_sweep: could not delete namespace $name" >&2
	done
	return 0
}
