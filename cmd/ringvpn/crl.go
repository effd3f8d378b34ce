package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
	"github.com/ringvpn/ringvpn/overlay/revoke"
)

func newCRLCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "crl",
		Short: "Spread and inspect revocation lists",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newCRLPublishCommand(a), newCACRLShowCommand(a))
	return cmd
}

func newCRLPublishCommand(a *app) *cobra.Command {
	var (
		socket string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "publish [--socket SOCKET] FILE",
		Short: "Hand a revocation list to the running member, which spreads it to the whole group",
		Long: `Hand the revocation lists of FILE (as "ringvpn ca revoke" writes it) to the
member running on this machine, over its control socket. The member
applies each list at once (it closes its links to the revoked members and
refuses them from then on) and spreads it: a broadcast over the ring
reaches every member within seconds, the DHT keeps it for members that are
away, and neighbours pass it on to each other. Every member checks the
CA's signature and takes a list only if it is newer than the one it holds,
so any member may publish, and nobody can roll a list back.

A list the member holds already is spread again. A list older than the
one it holds is refused (extend the newest list with "ringvpn ca revoke").
A file named in identity.crl is spread the same way when it changes.`,
		Example: `  ringvpn ca revoke --crl group.crl --cert mallory.crt --reason key-compromise
  ringvpn crl publish group.crl`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf("want one revocation list file, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read revocation list: %w", err)
			}
			res, err := node.PublishRevocations(cmd.Context(), socket, data)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			}
			refused := 0
			for _, r := range res {
				label := fmt.Sprintf("revocation list number %s of CA %q (%d revoked)", r.Number, r.CA, r.Entries)
				switch {
				case r.Error != "" && !r.New:
					refused++
					if !asJSON {
						fmt.Fprintf(a.stdout, "%s: refused: %s\n", label, r.Error)
					}
				case asJSON:
				case r.Error != "":
					fmt.Fprintf(a.stdout, "%s: applied, but %s\n", label, r.Error)
				case r.New:
					fmt.Fprintf(a.stdout, "%s: taken; spreading it to the group\n", label)
				default:
					fmt.Fprintf(a.stdout, "%s: held already; spreading it again\n", label)
				}
			}
			if refused > 0 {
				return fmt.Errorf("%d of %d revocation lists refused", refused, len(res))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", node.Default().Control.Socket, "the member's control socket (control.socket)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printRevocationStatus shows the revocation lists a member holds and
// how they spread (part of `ringvpn status`).
func printRevocationStatus(w io.Writer, r revoke.Status) {
	s := r.Stats
	fmt.Fprintf(w, "revocation lists: %d held; from members: taken %d, refused %d, duplicates %d, dropped %d; published %d, pushed %d; dht: checks %d, read %d, written %d, failed %d\n",
		len(r.Lists), s.Received, s.Refused, s.Duplicate, s.Dropped, s.Published, s.Pushed, s.Checks, s.DHTFetched, s.DHTStored, s.DHTErrors)
	for _, l := range r.Lists {
		next := "-"
		if !l.NextUpdate.IsZero() {
			next = fmtTime(l.NextUpdate)
			if time.Now().After(l.NextUpdate) {
				next += " (past: still applied)"
			}
		}
		fmt.Fprintf(w, "  CA %q: number %s, %d revoked, %d bytes, hash %s, next update %s\n", l.CA, l.Number, l.Entries, l.Bytes, l.Hash, next)
	}
}
