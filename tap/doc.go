// Package tap is the device side of ringvpn: a Device reads and writes the
// Ethernet frames of the node's virtual network interface.
//
// Open creates a real Linux TAP device (TUNSETIFF on /dev/net/tun) and
// configures it over rtnetlink: MTU, MAC, IPv4 and IPv6 addresses, link
// up. By default it also takes the kernel's checksum and TCP segmentation
// offloads (IFF_VNET_HDR, TUNSETOFFLOAD): a read brings up to 64 KB of a
// TCP stream, which Read cuts into MTU-sized frames, and Write merges a
// batch's TCP segments into super-segments, so both directions move
// dozens of frames per system call (package tap/offload). NewChannelPair
// makes two in-memory devices joined back to back, for tests and
// simulations that run without root. Package tap/frame parses and builds
// the frames themselves (Ethernet, ARP, IPv4, IPv6, NDP, ICMP "too big",
// TCP MSS clamping).
//
// The Device interface is batched and leaves header room in front of every
// frame, so the VPN can seal a frame in place (overlay and record headers
// written before it) without copying:
//
//	bufs[i]:  | offset bytes of header room | Ethernet frame (sizes[i]) | spare |
//
// It sits below overlay/vpn and imports nothing else of ringvpn but
// tap/frame and tap/offload.
package tap
