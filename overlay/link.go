package overlay

import (
	"context"
	"net/netip"

	"github.com/ringvpn/ringvpn/security"
)

// Link is an authenticated packet link to one peer member. *security.Link
// is one; simulations use plain in-memory links. Safe for concurrent use.
type Link interface {
	// Send sends one packet; pkt is not retained and may be reused when
	// Send returns.
	Send(pkt []byte) error
	// SetHandler installs the receiver of the peer's packets. It runs on
	// the link's reader goroutine; pkt may be modified in place and is
	// valid only during the call.
	SetHandler(h func(pkt []byte))
	// Peer is the peer's verified identity.
	Peer() *security.Member
	// Remote is the peer's current transport address.
	Remote() netip.AddrPort
	// Dialed reports whether this side opened the link.
	Dialed() bool
	// Done is closed when the link ends, by either side or by failure.
	Done() <-chan struct{}
	// Close closes the link and tells the peer.
	Close() error
}

// Linker opens and accepts links. Safe for concurrent use.
type Linker interface {
	// Dial opens a link to the node at remote. Both sides dialing each
	// other at once may yield one link or two; the Node keeps one.
	Dial(ctx context.Context, remote netip.AddrPort) (Link, error)
	// Accept returns the next link a peer opened; it fails after Close.
	Accept(ctx context.Context) (Link, error)
	// LocalAddr is the address peers can dial (possibly unspecified,
	// like 0.0.0.0:4242, when bound to every interface).
	LocalAddr() netip.AddrPort
	// Close stops accepting and closes every link.
	Close() error
}
