// Package offload moves TCP segmentation and receive coalescing between the
// kernel and user space, for a TAP device opened with IFF_VNET_HDR.
//
// With offloads on, every read from and write to the device starts with a
// virtio_net_hdr (VnetHdr) describing the frame after it. The kernel's TCP
// stack hands the device super-segments of up to 64 KB and leaves their
// checksums to it; a Segmenter cuts each into the MTU-sized frames the
// kernel would have sent, with their IP and TCP headers and checksums
// completed (user-space TSO). In the other direction, a Coalescer merges
// consecutive segments of one TCP flow into a super-segment that one write
// hands to the kernel, whose TCP receive path then runs once for all of
// them (user-space GRO, with the rules of Linux's tcp_gro_receive).
//
// Both are pure functions of their input, allocate nothing, and never
// panic on malformed input: the virtio header comes from the kernel, but
// the frames a Coalescer sees come from peers.
//
// The virtio_net_hdr (struct virtio_net_hdr in linux/virtio_net.h; 16-bit
// fields in host byte order, as the legacy virtio header a TAP uses by
// default):
//
//	 0       1       2               4               6               8              10
//	+-------+-------+---------------+---------------+---------------+---------------+
//	| flags |gso_typ|    hdr_len    |   gso_size    |  csum_start   |  csum_offset  |
//	+-------+-------+---------------+---------------+---------------+---------------+
//
// flags NEEDS_CSUM: the checksum over bytes csum_start.. is left to the
// receiver, to be stored at csum_start+csum_offset, where a partial sum of
// the pseudo-header waits. gso_type TCPV4 or TCPV6 (with bit ECN when CWR
// must stay on the first segment only): cut the TCP payload into
// segments of gso_size bytes. hdr_len is the length of the headers.
//
// It sits under package tap, which uses it on Linux, and imports only
// tap/frame.
package offload
