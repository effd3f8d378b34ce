package overlay

// PingMessage builds a link-local ping from src to its peer dst, for
// diagnostics that hold a bare link (`ringvpn probe`): the peer's node
// answers with a pong that echoes sent, a stamp of the caller's clock.
func PingMessage(src, dst Address, sent uint64) []byte {
	p := ping{Sent: sent, Coord: newCoord()}
	h := Header{Type: TypePing, Src: src, Dst: dst, TTL: 1}
	return appendMessage(nil, &h, p.append(nil))
}

// PongSent returns the stamp a pong echoes, and false for anything else.
func PongSent(pkt []byte) (uint64, bool) {
	h, payload, err := ParseHeader(pkt)
	if err != nil || h.Type != TypePong {
		return 0, false
	}
	p, err := parsePing(payload)
	if err != nil {
		return 0, false
	}
	return p.Sent, true
}
