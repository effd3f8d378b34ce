package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pingInterval is how often Ping repeats an unanswered echo request.
const pingInterval = 200 * time.Millisecond

// Ping sends ICMP echo requests from inside the host's namespace to dst
// (IPv4 or IPv6), one every 200 ms, and returns the round-trip time of the
// first matching reply; it fails when ctx ends or timeout passes without
// one. It uses a raw ICMP socket (root) or else an unprivileged ping
// socket, not the ping binary. Sends that fail (no route yet) are retried,
// so Ping can wait for a path to come up.
func (h *Host) Ping(ctx context.Context, dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rtt time.Duration
	err := h.Do(func() error {
		var err error
		rtt, err = ping(ctx, dst)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: ping %s: %w", h.Name, dst, err)
	}
	return rtt, nil
}

func ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	dst = dst.Unmap()
	if !dst.IsValid() {
		return 0, errors.New("invalid address")
	}
	var (
		raw, dgram, laddr string
		proto             int
		request, reply    icmp.Type
	)
	if dst.Is4() {
		raw, dgram, laddr, proto = "ip4:icmp", "udp4", "0.0.0.0", 1
		request, reply = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	} else {
		raw, dgram, laddr, proto = "ip6:ipv6-icmp", "udp6", "::", 58
		request, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	privileged := true
	c, err := icmp.ListenPacket(raw, laddr)
	if err != nil {
		privileged = false
		if c, err = icmp.ListenPacket(dgram, laddr); err != nil {
			return 0, fmt.Errorf("no raw or datagram ICMP socket: %w", err)
		}
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()

	var to net.Addr = &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}
	if !privileged {
		to = &net.UDPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}
	}
	// A raw socket sees every ICMP packet of the namespace: replies are
	// matched by ID (the kernel picks it for datagram sockets), sequence,
	// sender and a random payload.
	var token [16]byte
	rand.Read(token[:])
	id := int(binary.BigEndian.Uint16(token[:2]))
	sent := map[int]time.Time{}
	buf := make([]byte, 1500)
	var sendErr error
	for seq := 1; ; seq++ {
		if ctx.Err() != nil {
			if sendErr != nil {
				return 0, fmt.Errorf("no reply (last send: %w)", sendErr)
			}
			return 0, errors.New("no reply")
		}
		msg := icmp.Message{Type: request, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: token[:]}}
		b, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
		if err != nil {
			return 0, err
		}
		sent[seq&0xffff] = time.Now()
		if _, err := c.WriteTo(b, to); err != nil {
			sendErr = err
		}
		next := time.Now().Add(pingInterval)
		if d, ok := ctx.Deadline(); ok && d.Before(next) {
			next = d
		}
		if err := c.SetReadDeadline(next); err != nil {
			return 0, err
		}
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return 0, err
			}
			now := time.Now()
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != reply {
				continue
			}
			echo, ok := m.Body.(*icmp.Echo)
			if !ok || (privileged && echo.ID != id) || !bytes.Equal(echo.Data, token[:]) || !sameIP(from, dst) {
				continue
			}
			if t0, ok := sent[echo.Seq]; ok {
				return now.Sub(t0), nil
			}
		}
	}
}

func sameIP(a net.Addr, want netip.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return false
	}
	got, ok := netip.AddrFromSlice(ip)
	return ok && got.Unmap() == want.WithZone("")
}
