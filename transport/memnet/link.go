package memnet

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// LinkConfig describes the path between two hosts, the same in both
// directions. The zero value is a perfect link: no delay, no loss. Each
// delay is at most 24 hours.
type LinkConfig struct {
	// Latency is the one-way delay of every datagram.
	Latency time.Duration
	// Jitter adds a delay drawn uniformly from [0, Jitter] to each
	// datagram. It does not reorder: a datagram never overtakes one sent
	// before it on the same path unless Reorder picks the earlier one.
	Jitter time.Duration
	// Loss is the probability in [0,1] that a datagram is dropped.
	Loss float64
	// Reorder is the probability in [0,1] that a datagram is held back by
	// ReorderDelay so that datagrams sent after it overtake it.
	Reorder float64
	// Duplicate is the probability in [0,1] that a datagram that was not
	// lost arrives twice. Each copy gets its own jitter and reordering.
	Duplicate float64
	// ReorderDelay is the extra delay of a reordered datagram. Zero means
	// Latency+Jitter, and at least one millisecond.
	ReorderDelay time.Duration
}

// maxDelay bounds each delay of a LinkConfig, so that no sum of them
// overflows.
const maxDelay = 24 * time.Hour

// Validate reports every out-of-range field.
func (l LinkConfig) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"latency", l.Latency}, {"jitter", l.Jitter}, {"reorder_delay", l.ReorderDelay}} {
		if f.v < 0 || f.v > maxDelay {
			errs = append(errs, fmt.Errorf("memnet: link.%s: %v not in [0,%v]", f.name, f.v, maxDelay))
		}
	}
	for _, f := range []struct {
		name string
		p    float64
	}{{"loss", l.Loss}, {"reorder", l.Reorder}, {"duplicate", l.Duplicate}} {
		// The negated test also rejects NaN.
		if !(f.p >= 0 && f.p <= 1) {
			errs = append(errs, fmt.Errorf("memnet: link.%s: %v not in [0,1]", f.name, f.p))
		}
	}
	return errors.Join(errs...)
}

// reorderDelay is the extra delay of a reordered datagram.
func (l *LinkConfig) reorderDelay() time.Duration {
	if l.ReorderDelay > 0 {
		return l.ReorderDelay
	}
	return max(l.Latency+l.Jitter, time.Millisecond)
}

// hostPair names an undirected link: lo is the smaller address.
type hostPair struct{ lo, hi netip.Addr }

func makeHostPair(a, b netip.Addr) hostPair {
	if b.Less(a) {
		a, b = b, a
	}
	return hostPair{a, b}
}

// path is one direction between two hosts in one realm (see NAT.route);
// datagrams on it stay in order unless reordered on purpose.
type path struct {
	realm    *NAT
	from, to netip.Addr
}

// pathState tracks the datagrams in flight on a path that must not be
// overtaken.
type pathState struct {
	last    time.Time // arrival time of the latest in-order datagram
	pending int       // in-order datagrams still in flight
}
