package netnstest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// TCPTransfer sends n bytes of pseudo-random data (seeded from n, so runs
// repeat) over one TCP connection from host src to a listener on
// dstAddr:port inside host dst (port 0 picks a free one), checks that the
// SHA-256 of what arrived equals that of what was sent, and returns the
// throughput in bytes per second, from dialling to the receiver reading
// the last byte. Both sockets live in their namespaces (via Do); the
// transfer fails when ctx ends.
func TCPTransfer(ctx context.Context, src, dst *Host, dstAddr netip.Addr, port int, n int64) (throughput float64, err error) {
	if n < 0 {
		return 0, fmt.Errorf("tcp transfer: negative size %d", n)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var ln net.Listener
	if err := dst.Do(func() error {
		var err error
		ln, err = new(net.ListenConfig).Listen(ctx, "tcp", netip.AddrPortFrom(dstAddr, uint16(port)).String())
		return err
	}); err != nil {
		return 0, fmt.Errorf("tcp transfer: listen in %s: %w", dst.Name, err)
	}
	defer ln.Close()
	to := net.JoinHostPort(dstAddr.String(), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))

	type result struct {
		sum [sha256.Size]byte
		n   int64
		at  time.Time
		err error
	}
	recv := make(chan result, 1)
	go func() {
		recv <- func() (r result) {
			c, err := ln.Accept()
			if err != nil {
				r.err = err
				return r
			}
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
			defer stop()
			h := sha256.New()
			r.n, r.err = io.Copy(h, c)
			r.at = time.Now()
			h.Sum(r.sum[:0])
			return r
		}()
	}()
	// Accept returns when ctx ends: this closes the listener.
	stopLn := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopLn()

	start := time.Now()
	var c net.Conn
	if err := src.Do(func() error {
		var err error
		c, err = new(net.Dialer).DialContext(ctx, "tcp", to)
		return err
	}); err != nil {
		cancel()
		<-recv
		return 0, fmt.Errorf("tcp transfer: dial %s from %s: %w", to, src.Name, err)
	}
	defer c.Close()
	sent, sendErr := send(ctx, c, n)
	if sendErr != nil {
		c.Close() // the receiver sees a reset instead of waiting for ctx
	}
	r := <-recv
	switch {
	case sendErr != nil:
		return 0, fmt.Errorf("tcp transfer: send: %w", sendErr)
	case r.err != nil:
		return 0, fmt.Errorf("tcp transfer: receive: %w", r.err)
	case r.n != n:
		return 0, fmt.Errorf("tcp transfer: received %d bytes of %d", r.n, n)
	case r.sum != sent:
		return 0, fmt.Errorf("tcp transfer: SHA-256 mismatch: sent %x, received %x", sent, r.sum)
	}
	elapsed := r.at.Sub(start)
	if elapsed <= 0 {
		elapsed = time.Nanosecond
	}
	return float64(n) / elapsed.Seconds(), nil
}

// send writes n seeded pseudo-random bytes to c, shuts down its sending
// side and returns their SHA-256.
func send(ctx context.Context, c net.Conn, n int64) (sum [sha256.Size]byte, err error) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	var seed [32]byte
	copy(seed[:], fmt.Sprint(n))
	data := io.LimitReader(rand.NewChaCha8(seed), n)
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(c, h), data, make([]byte, 64<<10)); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return sum, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err != nil {
			return sum, err
		}
	}
	h.Sum(sum[:0])
	return sum, nil
}
