package tap

import (
	"fmt"
	"io"
	"net"

	"github.com/ringvpn/ringvpn/tap/frame"
)

// Device reads and writes Ethernet frames in batches. offset is header room
// the caller keeps in front of every frame for its own headers, so a frame
// can be sealed in place without a copy.
//
// Read is called from one goroutine at a time; Write may be called
// concurrently with Read and with itself. Neither retains bufs after it
// returns. After Close, Read and Write return an error satisfying
// errors.Is(err, net.ErrClosed).
type Device interface {
	// Read blocks until at least one frame is available, then reads at
	// most len(bufs) frames: frame i lands at bufs[i][offset:] and is
	// sizes[i] bytes long. It returns how many frames it read, at least 1
	// unless err != nil. Each bufs[i][offset:] must hold FrameLen(MTU())
	// bytes, else Read fails with io.ErrShortBuffer. A frame larger than
	// the MTU allows (which the kernel does not send) is returned in
	// bufs[0] if it fits there, and dropped otherwise.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write writes the frames bufs[i][offset:] and returns how many it
	// wrote. Frames of one flow keep their order; a device with offloads
	// may merge a TCP flow's segments and so write another flow's frame
	// first. On an error, the n frames written need not be the first n.
	// Write does not modify the frames.
	Write(bufs [][]byte, offset int) (n int, err error)
	// BatchSize is the most frames one Read returns, and a good batch
	// for Write.
	BatchSize() int
	// MTU is the IP MTU of the interface: the largest frame payload,
	// without the 14-byte Ethernet header.
	MTU() int
	MAC() net.HardwareAddr
	Name() string
	// Close releases the device and unblocks a pending Read.
	Close() error
}

// FrameLen is the largest frame a device with this MTU carries: the
// Ethernet header, one 802.1Q tag and the MTU.
func FrameLen(mtu int) int { return frame.EthernetHeaderLen + frame.VLANTagLen + mtu }

func shortBufferError(bufLen, offset, mtu int) error {
	return fmt.Errorf("tap: Read buffer of %d bytes with offset %d leaves less than the %d bytes a frame for MTU %d needs: %w", bufLen, offset, FrameLen(mtu), mtu, io.ErrShortBuffer)
}
