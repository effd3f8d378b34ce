package simnet

import (
	"errors"
	"fmt"
	"net"
)

var (
	// ErrAddrInUse reports that Listen was given an address a live node of
	// the fabric listens at.
	ErrAddrInUse = errors.New("simnet: address already in use")
	// ErrNoAnswer reports a dial to an address where no node listens, or
	// where the node crashed or left: the simulated handshake timed out.
	ErrNoAnswer = errors.New("no node answered at that address")
	// ErrSelfDial reports a dial to the dialer's own address.
	ErrSelfDial = errors.New("simnet: a node cannot dial itself")
	// ErrRefused reports a handshake refused because one side revokes the
	// other's certificate (Linker.SetRevocations).
	ErrRefused = errors.New("simnet: peer refused")
	// ErrTooBig reports a packet longer than MaxPacket.
	ErrTooBig = fmt.Errorf("simnet: packet longer than %d bytes", MaxPacket)
)

// errClosed is returned by the methods of a closed Link, Linker or Fabric.
var errClosed = fmt.Errorf("simnet: %w", net.ErrClosed)
