// Package sim runs many ring nodes in one process, on the in-memory
// network with real DTLS links (transport/memnet, security) or on plain
// in-memory links (overlay/simnet) for thousands of nodes, and measures
// the ring: convergence, correctness, hops, delivery, latency stretch,
// links per node and DHT success, optionally under churn. `ringvpn sim`
// prints what it measures; tests use the same Cluster.
package sim
