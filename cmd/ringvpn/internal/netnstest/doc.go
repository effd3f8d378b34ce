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
// A NATLab puts sites behind NAT routers: a public segment (a bridge, as
// in a Lab) with public hosts, such as a bootstrap member and a reflector,
// and for each site a router namespace with one leg on the public bridge
// and one on the site's own bridge, behind which the site's hosts sit.
// The routers translate with nftables (run with the nft command, which
// RequireNAT installs when missing): Cone (masquerade, port-preserving,
// one external port per socket), Symmetric (masquerade with fully-random
// ports: one per destination) or Route (no NAT); NAT routers drop what
// was not asked for from inside. Site.Flush empties a router's conntrack
// table (its mappings) and Site.Rebind makes it hand out new ports.
//
//	 rvt<pid>-<lab>pub                   rvt<pid>-<lab>p1 (public host)
//	+------------------------+          +--------------------------+
//	| br0 -- p1 -------------+--veth----+ eth0 203.0.113.1/24      |
//	|    \-- p2 ...          |          +--------------------------+
//	|    \-- s1 -------------+--veth--+   rvt<pid>-<lab>s1r (router)
//	|    \-- s2 ...          |        |  +--------------------------+
//	+------------------------+        +--+ wan 203.0.113.101/24     |
//	                                     |  nft: masquerade, filter |
//	 rvt<pid>-<lab>s1br (site 1)         |                          |
//	+------------------------+        +--+ lan 10.1.0.1/24          |
//	| br0 -- r --------------+--veth--+  +--------------------------+
//	|    \-- h1 -------------+--veth--+   rvt<pid>-<lab>s1h1 (site host)
//	|    \-- h2 ...          |        |  +--------------------------+
//	+------------------------+        +--+ eth0 10.1.0.2/24         |
//	                                     |  default via 10.1.0.1    |
//	                                     +--------------------------+
//
// Every name starts with "rvt<pid>-", so New and NewNATLab first sweep
// away what a crashed earlier run left behind (names whose pid is no
// longer alive), and t.Cleanup removes the lab: processes first, then the
// namespaces (deleting a namespace deletes its end of each veth pair, and
// with it the pair).
//
// The test process itself can act inside a namespace with Host.Do, which
// runs a function on an OS thread switched into it; sockets opened there
// stay in the namespace. Ping and TCPTransfer are built on it, so tests
// need neither ping nor iperf binaries. Everything here needs root
// (CAP_SYS_ADMIN and CAP_NET_ADMIN); call Require (RequireNAT for a
// NATLab) first.
package netnstest
