package memnet

import (
	"errors"
	"fmt"
	"net"

	"github.com/ringvpn/ringvpn/transport"
)

var (
	// ErrAddrInUse reports that Listen was given an address that a Conn is
	// bound to or that is some Conn's public address.
	ErrAddrInUse = errors.New("memnet: address already in use")
	// ErrNoFreePort reports that every ephemeral port of a host is taken.
	ErrNoFreePort = errors.New("memnet: no free ephemeral port")
	// ErrTooLarge reports a datagram longer than transport.MaxPacket.
	ErrTooLarge = fmt.Errorf("memnet: datagram longer than %d bytes", transport.MaxPacket)
)

var (
	// errClosed is returned by every method of a closed Conn or Network.
	errClosed = fmt.Errorf("memnet: %w", net.ErrClosed)
	// errShortSlices reports ReadBatch or WriteBatch scratch slices shorter
	// than bufs.
	errShortSlices = errors.New("memnet: sizes, from or to shorter than bufs")
)
