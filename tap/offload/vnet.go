package offload

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ringvpn/ringvpn/tap/frame"
)

// VnetHdrLen is the size of the virtio_net_hdr the device is told to use
// (TUNSETVNETHDRSZ): the legacy header, without num_buffers.
const VnetHdrLen = 10

// VnetHdr flags.
const (
	// FlagNeedsCsum: the checksum from CsumStart on is still to be
	// computed and stored at CsumStart+CsumOffset.
	FlagNeedsCsum uint8 = 1
	// FlagDataValid: the kernel already verified the checksum.
	FlagDataValid uint8 = 2
)

// VnetHdr GSO types.
const (
	GSONone  uint8 = 0
	GSOTCPv4 uint8 = 1
	GSOUDP   uint8 = 3
	GSOTCPv6 uint8 = 4
	GSOUDPL4 uint8 = 5
	// GSOECN is a bit added to GSOTCPv4 or GSOTCPv6: the super-segment
	// carries CWR, which only its first segment may keep.
	GSOECN uint8 = 0x80
)

// VnetHdr is a decoded virtio_net_hdr. The zero value describes an
// ordinary frame with its checksums complete.
type VnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// Errors, made once so that refusing a frame allocates nothing. Each wraps
// one of tap/frame's sentinels.
var (
	errShortVnetHdr = fmt.Errorf("offload: virtio_net_hdr shorter than %d bytes: %w", VnetHdrLen, frame.ErrTruncated)
	errCsumBounds   = fmt.Errorf("offload: virtio_net_hdr checksum position outside the frame: %w", frame.ErrMalformed)
	errGSOType      = fmt.Errorf("offload: virtio_net_hdr GSO type not TCP: %w", frame.ErrUnsupported)
	errGSOSize      = fmt.Errorf("offload: virtio_net_hdr GSO size 0: %w", frame.ErrMalformed)
	errGSOFamily    = fmt.Errorf("offload: GSO type does not match the frame's IP version: %w", frame.ErrMalformed)
	errNotTCP       = fmt.Errorf("offload: GSO frame is not an unfragmented TCP packet: %w", frame.ErrMalformed)
	errTCPHeader    = fmt.Errorf("offload: GSO frame's TCP header is cut short: %w", frame.ErrTruncated)
	errShortFrame   = fmt.Errorf("offload: frame shorter than an Ethernet header: %w", frame.ErrTruncated)
	// ErrShortBuffer: a segment does not fit the buffer given for it.
	ErrShortBuffer = errors.New("offload: buffer too short for a segment")
)

// ParseVnetHdr decodes the header at the start of b. It checks only the
// length: what the fields mean depends on the frame behind them, which
// Segmenter.Reset checks.
func ParseVnetHdr(b []byte) (VnetHdr, error) {
	if len(b) < VnetHdrLen {
		return VnetHdr{}, errShortVnetHdr
	}
	return VnetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.NativeEndian.Uint16(b[2:]),
		GSOSize:    binary.NativeEndian.Uint16(b[4:]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:]),
	}, nil
}

// Put encodes h into b[:VnetHdrLen]; b must be that long.
func (h VnetHdr) Put(b []byte) {
	_ = b[VnetHdrLen-1]
	b[0], b[1] = h.Flags, h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}
