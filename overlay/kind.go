package overlay

import (
	"fmt"
	"strings"
)

// Kind is a set of reasons to keep a link. A link stays open while either
// side has a reason for it; the maintainers add and remove their own.
type Kind uint8

const (
	// KindLeaf: a link to a bootstrap peer, the way in; dropped once the
	// node has its place in the ring.
	KindLeaf Kind = 1 << iota
	// KindNear: one of the k closest nodes on either side.
	KindNear
	// KindFar: a Symphony long link.
	KindFar
	// KindShortcut: a direct link made for traffic (the VPN).
	KindShortcut
)

var kindNames = []struct {
	k    Kind
	name string
}{{KindLeaf, "leaf"}, {KindNear, "near"}, {KindFar, "far"}, {KindShortcut, "shortcut"}}

// String lists the kinds, like "near+far", or "none".
func (k Kind) String() string {
	var parts []string
	for _, kn := range kindNames {
		if k&kn.k != 0 {
			parts = append(parts, kn.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "+")
}

// MarshalText implements encoding.TextMarshaler (status JSON).
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (status JSON read
// back by `ringvpn status`).
func (k *Kind) UnmarshalText(b []byte) error {
	*k = 0
	s := string(b)
	if s == "none" || s == "" {
		return nil
	}
	for _, part := range strings.Split(s, "+") {
		found := false
		for _, kn := range kindNames {
			if kn.name == part {
				*k |= kn.k
				found = true
			}
		}
		if !found {
			return fmt.Errorf("overlay: unknown link kind %q", part)
		}
	}
	return nil
}
