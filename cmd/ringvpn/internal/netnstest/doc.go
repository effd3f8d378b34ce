// Package netnstest runs integration tests of ringvpn members in Linux
// network namespaces: a Lab is a LAN of hosts, each a namespace joined to
// one bridge, so test traffic never leaves the namespaces the test created.
//
// It sits under cmd/ringvpn/internal because only the binary's tests (and
// this package's own) use it; the bash counterpart for the demo and the
// benchmark is scripts/netns.sh.
//
//	 namespace rvt<pid>-<lab>br           namespace rvt<pid>-<lab>h1
//	+---------------------------+        +--------------------------+
//	| br0 --- h1 ---------------+--veth--+ eth0 192.168.<s>.1/24    |
//	|     \-- h2 ---------------+--veth--+ ... (rvt<pid>-<lab>h2)   |
//	+---------------------------+        +--------------------------+
//
// Every name starts with "rvt<pid>-", so New first sweeps away what a
// crashed earlier run left behind (names whose pid is no longer alive),
// and t.Cleanup removes the lab: processes first, then the namespaces
// (deleting a namespace deletes its end of each veth pair, and with it
// the pair).
//
// The test process itself can act inside a namespace with Host.Do, which
// runs a function on an OS thread switched into it; sockets opened there
// stay in the namespace. Ping and TCPTransfer are built on it, so tests
// need neither ping nor iperf binaries. Everything here needs root
// (CAP_SYS_ADMIN and CAP_NET_ADMIN); call Require first.
package netnstest
