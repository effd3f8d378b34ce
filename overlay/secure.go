package overlay

import (
	"context"
	"net/netip"
	"sync"

	"go.uber.org/zap"

	"github.com/ringvpn/ringvpn/security"
	"github.com/ringvpn/ringvpn/transport"
)

// SecureLinker makes DTLS links (security.Endpoint) over the pipes of one
// transport.Mux: one socket carries every link of the node.
type SecureLinker struct {
	mux  *transport.Mux
	ep   *security.Endpoint
	wg   sync.WaitGroup
	once sync.Once
}

var _ Linker = (*SecureLinker)(nil)

// NewSecureLinker builds the endpoint for identity over mux and starts
// serving the handshakes peers open. The linker owns mux from now on.
func NewSecureLinker(mux *transport.Mux, identity *security.Identity, bundle *security.TrustBundle, cfg security.Config, log *zap.Logger) (*SecureLinker, error) {
	dial := func(ctx context.Context, remote netip.AddrPort) (security.Pipe, error) {
		p, err := mux.Dial(ctx, remote)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	ep, err := security.NewEndpoint(identity, bundle, cfg, dial, log)
	if err != nil {
		return nil, err
	}
	s := &SecureLinker{mux: mux, ep: ep}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			p, err := mux.Accept(context.Background())
			if err != nil {
				return
			}
			ep.Serve(p)
		}
	}()
	return s, nil
}

// Endpoint is the security endpoint (for status and handshake counters).
func (s *SecureLinker) Endpoint() *security.Endpoint { return s.ep }

// Mux is the socket's demultiplexer (for its drop counters).
func (s *SecureLinker) Mux() *transport.Mux { return s.mux }

// Dial implements Linker.
func (s *SecureLinker) Dial(ctx context.Context, remote netip.AddrPort) (Link, error) {
	l, err := s.ep.Dial(ctx, remote)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Accept implements Linker.
func (s *SecureLinker) Accept(ctx context.Context) (Link, error) {
	l, err := s.ep.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// LocalAddr implements Linker.
func (s *SecureLinker) LocalAddr() netip.AddrPort { return s.mux.LocalAddr() }

// Close implements Linker: links are closed (peers told), then the socket.
func (s *SecureLinker) Close() error {
	var err error
	s.once.Do(func() {
		s.ep.Close()
		err = s.mux.Close()
		s.wg.Wait()
	})
	return err
}
