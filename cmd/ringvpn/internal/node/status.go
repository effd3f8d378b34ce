package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/overlay"
	"github.com/ringvpn/ringvpn/overlay/dht"
	"github.com/ringvpn/ringvpn/overlay/revoke"
	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/transport"
)

// Status is what `ringvpn status` shows.
type Status struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Listen  string `json:"listen"`
	// Reflexive lists where peers see this node (its NAT's mappings).
	Reflexive []string `json:"reflexive"`
	Uptime    string   `json:"uptime"`
	// InRing: the node has near neighbours on both sides.
	InRing        bool `json:"in_ring"`
	EstimatedSize int  `json:"estimated_size"`
	// Successors and Predecessors are the near neighbours on each side,
	// nearest first.
	Successors   []string          `json:"successors"`
	Predecessors []string          `json:"predecessors"`
	Links        []LinkStatus      `json:"links"`
	Routing      overlay.Counters  `json:"routing"`
	DHT          dht.Stats         `json:"dht"`
	Transport    transport.Stats   `json:"transport"`
	Handshakes   HandshakeStatus   `json:"handshakes"`
	Pipes        overlay.PipeStats `json:"pipes"`
	// Revocations are the revocation lists held and how they spread.
	Revocations revoke.Status `json:"revocations"`
	// VPN is absent on a ring-only member.
	VPN *vpn.Status `json:"vpn,omitempty"`
}

// LinkStatus is one link's row.
type LinkStatus struct {
	Peer    string `json:"peer"`
	Address string `json:"address"`
	// Kind says why this node keeps the link (leaf, near, far), PeerKind
	// why the peer does; a link lives while either has a reason.
	Kind     string `json:"kind"`
	PeerKind string `json:"peer_kind"`
	Remote   string `json:"remote"`
	// Relay names the node a relayed link goes through; empty when the
	// link is direct.
	Relay     string  `json:"relay,omitempty"`
	Role      string  `json:"role"`
	RTTMillis float64 `json:"rtt_ms"`
	Since     string  `json:"since"`
	MsgsIn    uint64  `json:"msgs_in"`
	MsgsOut   uint64  `json:"msgs_out"`
	BytesIn   uint64  `json:"bytes_in"`
	BytesOut  uint64  `json:"bytes_out"`
}

// HandshakeStatus counts DTLS handshakes.
type HandshakeStatus struct {
	Completed uint64 `json:"completed"`
	Failed    uint64 `json:"failed"`
}

// Status reports the node's state now.
func (n *Node) Status() Status {
	completed, failed := n.linker.Endpoint().HandshakeStats()
	rs := n.ring.Status()
	s := Status{
		Name:          n.identity.Member.Name,
		Address:       n.identity.Member.Address.String(),
		Listen:        n.linker.LocalAddr().String(),
		Reflexive:     endpointStrings(rs.Reflexive),
		Uptime:        time.Since(n.started).Round(time.Second).String(),
		InRing:        rs.InRing,
		EstimatedSize: rs.EstimatedSize,
		Successors:    addressStrings(rs.Successors),
		Predecessors:  addressStrings(rs.Predecessors),
		Routing:       rs.Counters,
		DHT:           n.dht.Stats(),
		Transport:     n.linker.Mux().Stats(),
		Handshakes:    HandshakeStatus{Completed: completed, Failed: failed},
		Pipes:         n.pipes.Stats(),
		Revocations:   n.spread.Status(),
		Links:         []LinkStatus{},
	}
	if n.vpn != nil {
		vs := n.vpn.Status()
		s.VPN = &vs
	}
	names := make(map[overlay.Address]string, len(rs.Peers))
	for _, p := range rs.Peers {
		names[p.Address] = p.Name
	}
	for _, p := range rs.Peers {
		role := "acceptor"
		if p.Dialed {
			role = "dialer"
		}
		relay := ""
		if !p.Via.IsZero() {
			relay = p.Via.String()
			if name := names[p.Via]; name != "" {
				relay = name
			}
		}
		s.Links = append(s.Links, LinkStatus{
			Peer: p.Name, Address: p.Address.String(), Kind: p.Kinds.String(), PeerKind: p.PeerKinds.String(),
			Remote: p.Endpoint.String(), Relay: relay, Role: role, RTTMillis: float64(p.RTT.Microseconds()) / 1000,
			Since: p.Since.UTC().Format(time.RFC3339), MsgsIn: p.MsgsIn, MsgsOut: p.MsgsOut,
			BytesIn: p.BytesIn, BytesOut: p.BytesOut,
		})
	}
	sort.Slice(s.Links, func(i, j int) bool { return s.Links[i].Address < s.Links[j].Address })
	return s
}

func endpointStrings(eps []netip.AddrPort) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.String()
	}
	return out
}

func addressStrings(as []overlay.Address) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// ServeControl serves the status endpoint on the configured Unix socket
// until ctx ends. The socket is made 0600: status is for the operator.
func (n *Node) ServeControl(ctx context.Context) error {
	path := n.cfg.Control.Socket
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("control.socket: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control.socket: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.Status())
	})
	mux.HandleFunc("POST /revocations", n.servePublish)
	// Profiles, for the operator (the socket is 0600): e.g.
	// curl --unix-socket SOCK http://x/debug/pprof/profile?seconds=10
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	n.goRun(func() {
		<-ctx.Done()
		srv.Close()
	})
	n.goRun(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("control endpoint stopped", zap.Error(err))
		}
		os.Remove(path)
	})
	return nil
}

// removeStaleSocket removes a socket left by a node that died, but refuses
// to take over one a running node still answers on.
func removeStaleSocket(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("control.socket %s: another ringvpn is running there; stop it or set control.socket", path)
	}
	return os.Remove(path)
}

// QueryStatus asks the node listening on socket for its status.
func QueryStatus(ctx context.Context, socket string) (Status, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ringvpn/status", nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("no ringvpn answers on %s (is `ringvpn up` running? is control.socket the same?): %w", socket, err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return Status{}, fmt.Errorf("status from %s: %w", socket, err)
	}
	return s, nil
}
