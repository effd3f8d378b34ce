package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/transport"
)

// Status is what `ringvpn status` shows.
type Status struct {
	Name       string          `json:"name"`
	Address    string          `json:"address"`
	Listen     string          `json:"listen"`
	Uptime     string          `json:"uptime"`
	Links      []LinkStatus    `json:"links"`
	Transport  transport.Stats `json:"transport"`
	Handshakes HandshakeStatus `json:"handshakes"`
}

// LinkStatus is one link's row.
type LinkStatus struct {
	Peer       string  `json:"peer"`
	Address    string  `json:"address"`
	Remote     string  `json:"remote"`
	Role       string  `json:"role"`
	RTTMillis  float64 `json:"rtt_ms"`
	Since      string  `json:"since"`
	PacketsIn  uint64  `json:"packets_in"`
	PacketsOut uint64  `json:"packets_out"`
	BytesIn    uint64  `json:"bytes_in"`
	BytesOut   uint64  `json:"bytes_out"`
	DropsIn    uint64  `json:"drops_in"`
	Rekeys     uint64  `json:"rekeys"`
}

// HandshakeStatus counts DTLS handshakes.
type HandshakeStatus struct {
	Completed uint64 `json:"completed"`
	Failed    uint64 `json:"failed"`
}

// Status reports the node's state now.
func (n *Node) Status() Status {
	completed, failed := n.endpoint.HandshakeStats()
	s := Status{
		Name:       n.identity.Member.Name,
		Address:    n.identity.Member.Address.String(),
		Listen:     n.mux.LocalAddr().String(),
		Uptime:     time.Since(n.started).Round(time.Second).String(),
		Transport:  n.mux.Stats(),
		Handshakes: HandshakeStatus{Completed: completed, Failed: failed},
		Links:      []LinkStatus{},
	}
	n.mu.Lock()
	for l, st := range n.links {
		st.mu.Lock()
		rtt := st.rtt
		st.mu.Unlock()
		ls := l.Stats()
		role := "acceptor"
		if l.Dialed() {
			role = "dialer"
		}
		s.Links = append(s.Links, LinkStatus{
			Peer: l.Peer().Name, Address: l.Peer().Address.String(), Remote: l.Remote().String(),
			Role: role, RTTMillis: float64(rtt.Microseconds()) / 1000, Since: l.Since().UTC().Format(time.RFC3339),
			PacketsIn: ls.PacketsIn, PacketsOut: ls.PacketsOut, BytesIn: ls.BytesIn, BytesOut: ls.BytesOut,
			DropsIn: ls.DropsIn, Rekeys: ls.Rekeys,
		})
	}
	n.mu.Unlock()
	sort.Slice(s.Links, func(i, j int) bool { return s.Links[i].Peer < s.Links[j].Peer })
	return s
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
