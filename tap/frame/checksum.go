package frame

import (
	"encoding/binary"
	"net/netip"
)

// Checksum returns the Internet checksum (RFC 1071) of b: the one's
// complement of the one's complement sum of its 16-bit big-endian words,
// starting from initial (a partial sum such as PseudoHeaderSum returns; 0
// for none). An odd final byte is padded with zero.
//
// To verify a checksum, run Checksum over the data including the checksum
// field: the result is 0 when it is correct.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(sum(b, uint64(initial)))
}

// PseudoHeaderSum is the partial sum of the pseudo-header that TCP, UDP and
// ICMPv6 checksums cover: the addresses, the protocol and the upper-layer
// length (RFC 793 for IPv4, RFC 8200 section 8.1 for IPv6). src and dst
// are of the same family. Pass it to Checksum as initial.
func PseudoHeaderSum(proto uint8, src, dst netip.Addr, length int) uint32 {
	var acc uint64
	if src.Is4() {
		s, d := as4(src), as4(dst)
		acc = sum(s[:], acc)
		acc = sum(d[:], acc)
	} else {
		s, d := src.As16(), dst.As16()
		acc = sum(s[:], acc)
		acc = sum(d[:], acc)
	}
	// The IPv4 form has a 16-bit length and the IPv6 form a 32-bit one;
	// as 16-bit words both add up to the same sum.
	acc += uint64(proto) + uint64(uint32(length)>>16) + uint64(uint32(length)&0xffff)
	return uint32(fold(acc))
}

// sum adds b's big-endian 16-bit words to acc, four bytes at a time: the
// one's complement sum of 32-bit words folds to the same 16-bit sum, and a
// 64-bit accumulator cannot overflow for any input that fits in memory.
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 8 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold reduces a 64-bit one's complement sum to 16 bits.
func fold(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// updateChecksum returns the checksum hc after a 16-bit word of the covered
// data changed from from to to, without summing the data again
// (RFC 1624, equation 3: HC' = ~(~HC + ~m + m')).
func updateChecksum(hc, from, to uint16) uint16 {
	acc := uint64(^hc) + uint64(^from) + uint64(to)
	return ^fold(acc)
}
