package revoke

import (
	"encoding/hex"
	"time"
)

// Status is what a member shows of its revocation lists.
type Status struct {
	// Lists are the lists held, one per CA.
	Lists []ListStatus `json:"lists"`
	Stats
}

// ListStatus describes one list held.
type ListStatus struct {
	CA         string    `json:"ca"`
	Number     string    `json:"number"`
	Entries    int       `json:"entries"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	// Hash is the start of the list's SHA-256, which names it on the wire.
	Hash  string `json:"hash"`
	Bytes int    `json:"bytes"`
}

// Stats count what a Spreader did.
type Stats struct {
	// Received counts lists taken from other members (newer than the
	// ones held); Refused, lists from them that were not: not signed by a
	// CA of the bundle, older than the one held, or malformed.
	Received uint64 `json:"received"`
	Refused  uint64 `json:"refused"`
	// ViaBroadcast, ViaPeer and ViaDHT split Received by the way the
	// lists came: a ring broadcast, a neighbour's push, the DHT.
	ViaBroadcast uint64 `json:"via_broadcast"`
	ViaPeer      uint64 `json:"via_peer"`
	ViaDHT       uint64 `json:"via_dht"`
	// Duplicate counts pieces and lists of a list already taken or
	// refused; Dropped, messages that were malformed, did not fit in the
	// queue, exceeded the signature-check budget, or stayed incomplete.
	Duplicate uint64 `json:"duplicate"`
	Dropped   uint64 `json:"dropped"`
	// Checked counts the lists from other members whose signature was
	// checked (at most 20 a second, whatever arrives).
	Checked uint64 `json:"checked"`
	// Published counts the lists this member spread (from its files, or
	// `ringvpn crl publish`); Pushed, lists sent to a neighbour that
	// lacked them.
	Published uint64 `json:"published"`
	Pushed    uint64 `json:"pushed"`
	// Checks counts the reads of the DHT's lists; DHTFetched the lists
	// read from there, DHTStored those written there, DHTErrors the reads
	// and writes that failed.
	Checks     uint64 `json:"checks"`
	DHTFetched uint64 `json:"dht_fetched"`
	DHTStored  uint64 `json:"dht_stored"`
	DHTErrors  uint64 `json:"dht_errors"`
}

// Stats returns the counters.
func (s *Spreader) Stats() Stats {
	c := &s.stats
	return Stats{
		Received: c.received.Load(), Refused: c.refused.Load(),
		ViaBroadcast: c.viaBroadcast.Load(), ViaPeer: c.viaPeer.Load(), ViaDHT: c.viaDHT.Load(), Duplicate: c.duplicate.Load(), Dropped: c.dropped.Load(), Checked: c.checked.Load(),
		Published: c.published.Load(), Pushed: c.pushed.Load(), Checks: c.checks.Load(),
		DHTFetched: c.dhtFetched.Load(), DHTStored: c.dhtStored.Load(), DHTErrors: c.dhtErrors.Load(),
	}
}

// Status returns the lists held and the counters.
func (s *Spreader) Status() Status {
	st := Status{Lists: []ListStatus{}, Stats: s.Stats()}
	for _, h := range s.revs.Held() {
		l := h.List
		sum := hashOf(l)
		st.Lists = append(st.Lists, ListStatus{
			CA: h.CA.Subject.CommonName, Number: l.Number.String(), Entries: len(l.RevokedCertificateEntries),
			ThisUpdate: l.ThisUpdate.UTC(), NextUpdate: l.NextUpdate.UTC(), Hash: hex.EncodeToString(sum[:8]), Bytes: len(l.Raw),
		})
	}
	return st
}
