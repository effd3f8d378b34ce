package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
	"github.com/ringvpn/ringvpn/overlay/vpn"
	"github.com/ringvpn/ringvpn/overlay/vpn/firewall"
)

func newStatusCommand(a *app) *cobra.Command {
	var (
		socket string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show a running node's links",
		Args:  withUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := node.QueryStatus(cmd.Context(), socket)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			printStatus(a, s)
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", node.Default().Control.Socket, "the node's control socket (control.socket)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(a *app, s node.Status) {
	fmt.Fprintf(a.stdout, "node %s  %s  listening on %s  up %s\n", s.Name, s.Address, s.Listen, s.Uptime)
	if len(s.Reflexive) > 0 {
		fmt.Fprintf(a.stdout, "seen by peers at %s\n", strings.Join(s.Reflexive, ", "))
	}
	ring := "joining"
	if s.InRing {
		ring = "in the ring"
	}
	fmt.Fprintf(a.stdout, "ring: %s, about %d nodes; successor %s, predecessor %s\n",
		ring, s.EstimatedSize, first(s.Successors), first(s.Predecessors))
	fmt.Fprintf(a.stdout, "handshakes: %d completed, %d failed; datagrams in %d, dropped %d; messages forwarded %d, undeliverable %d\n",
		s.Handshakes.Completed, s.Handshakes.Failed, s.Transport.Datagrams, s.Transport.Dropped(),
		s.Routing.Forwarded, s.Routing.NoRoute+s.Routing.TTLExpired+s.Routing.Malformed)
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tADDRESS\tKIND\tPEER KIND\tENDPOINT\tROLE\tRTT\tMSGS IN/OUT\tBYTES IN/OUT")
	for _, l := range s.Links {
		endpoint := l.Remote
		if l.Relay != "" {
			endpoint = "relayed by " + l.Relay
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.2fms\t%d/%d\t%d/%d\n",
			l.Peer, short(l.Address), l.Kind, l.PeerKind, endpoint, l.Role, l.RTTMillis,
			l.MsgsIn, l.MsgsOut, l.BytesIn, l.BytesOut)
	}
	tw.Flush()
	if len(s.Links) == 0 {
		fmt.Fprintln(a.stdout, "(no links)")
	}
	printRevocationStatus(a.stdout, s.Revocations)
	if s.VPN != nil {
		printVPNStatus(a, s.VPN)
	}
}

func printVPNStatus(a *app, v *vpn.Status) {
	ips := make([]string, len(v.IPs))
	for i, p := range v.IPs {
		ips[i] = p.String()
		if slices.Contains(v.Leased, p) {
			ips[i] += " (leased)"
		}
	}
	fmt.Fprintf(a.stdout, "\nvpn: %s %s mtu %d; frames out %d, in %d; dropped: spoofed %d, unresolved %d, not for us %d, broadcast %d, failed %d\n",
		v.Device, strings.Join(ips, ","), v.MTU, v.FramesOut, v.FramesIn, v.DropSpoofed, v.DropUnresolved,
		v.DropNotForUs, v.DropBroadcast, v.DropSendFailed+v.DropQueueFull)
	fmt.Fprintln(a.stdout, firewallLine(v.Firewall))
	if len(v.Peers) == 0 {
		fmt.Fprintln(a.stdout, "(no VPN peers yet)")
		return
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tVIRTUAL IP\tPATH\tLINK KIND\tPACKETS OUT/IN\tIDLE")
	for _, p := range v.Peers {
		pips := make([]string, len(p.IPs))
		for i, ip := range p.IPs {
			pips[i] = ip.Addr().String()
		}
		kinds := "-"
		if p.Path == vpn.PathDirect {
			kinds = p.Kinds.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", p.Name, short(p.Address.String()), strings.Join(pips, ","),
			p.Path, kinds, p.PacketsOut, p.PacketsIn, p.Idle.Round(time.Second))
	}
	tw.Flush()
}

// firewallLine sums up the firewall in one line: its rules, its flows
// and the packets it dropped each way.
func firewallLine(f firewall.Stats) string {
	if !f.Enabled {
		return "firewall: off (no vpn.firewall rules), everything passes"
	}
	rules := func(n int) string {
		switch n {
		case -1:
			return "all pass"
		case 1:
			return "1 rule"
		}
		return fmt.Sprintf("%d rules", n)
	}
	return fmt.Sprintf("firewall: on (inbound %s, outbound %s), %d flows; dropped in %d / out %d",
		rules(f.InboundRules), rules(f.OutboundRules), f.Flows, f.Inbound.Total(), f.Outbound.Total())
}

// short abbreviates an overlay address for tables.
func short(addr string) string {
	if len(addr) > 12 {
		return addr[:12] + "…"
	}
	return addr
}

func first(addrs []string) string {
	if len(addrs) == 0 {
		return "none"
	}
	return short(addrs[0])
}
