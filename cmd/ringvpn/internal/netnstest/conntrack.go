package netnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ipctnlMsgCtDelete is IPCTNL_MSG_CT_DELETE (linux/netfilter/nfnetlink_conntrack.h).
const ipctnlMsgCtDelete = 2

// flushConntrack empties the conntrack table of the calling thread's
// network namespace, as `conntrack -F` does, without needing the conntrack
// tool: one ctnetlink delete request with no tuple, for every address
// family (AF_UNSPEC), and its acknowledgement. Run it inside Host.Do.
func flushConntrack() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}

	// struct nlmsghdr, then struct nfgenmsg {family, version, res_id (big endian)}.
	const size = unix.SizeofNlMsghdr + 4
	const seq = 1
	var req [size]byte
	binary.NativeEndian.PutUint32(req[0:], size)
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(req[8:], seq)
	req[16] = unix.AF_UNSPEC
	req[17] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}

	buf := make([]byte, os.Getpagesize())
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("netlink: short error message")
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return fmt.Errorf("ctnetlink flush: %w", unix.Errno(-errno))
			}
			return nil // the acknowledgement
		}
	}
}
