package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/ringvpn/ringvpn/security"
)

// PublishResult is what became of one revocation list handed to a node
// (`ringvpn crl publish`).
type PublishResult struct {
	CA      string `json:"ca"`
	Number  string `json:"number"`
	Entries int    `json:"entries"`
	// New says the node did not hold the list and now does; with no
	// Error, a list not new was held already and is spread again.
	New bool `json:"new"`
	// Error says why the node refused the list (not signed by a CA of
	// its bundle, older than the one it holds, ...) or could not spread
	// it.
	Error string `json:"error,omitempty"`
}

// maxPublishBody bounds a revocation list file sent to the control
// socket.
const maxPublishBody = 4 << 20

// PublishRevocations adds the revocation lists of data (PEM "X509 CRL"
// blocks or one DER list, as `ringvpn ca revoke` writes them) to the
// node, which spreads them to the other members. Each list gets a result;
// the error is for data that holds no list.
func (n *Node) PublishRevocations(data []byte) ([]PublishResult, error) {
	ders, err := security.DecodeRevocationListsPEM(data)
	if err != nil {
		return nil, err
	}
	out := make([]PublishResult, 0, len(ders))
	for _, der := range ders {
		var r PublishResult
		if crl, err := x509.ParseRevocationList(der); err == nil {
			r.CA, r.Entries = crl.Issuer.CommonName, len(crl.RevokedCertificateEntries)
			if crl.Number != nil {
				r.Number = crl.Number.String()
			}
		}
		changed, err := n.spread.Publish(der)
		r.New = changed
		if err != nil {
			r.Error = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}

// servePublish is POST /revocations: the body is a revocation list file.
func (n *Node) servePublish(w http.ResponseWriter, req *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxPublishBody))
	if err != nil {
		http.Error(w, fmt.Sprintf("read the revocation lists: %v", err), http.StatusBadRequest)
		return
	}
	res, err := n.PublishRevocations(data)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

// PublishRevocations hands a revocation list file's content to the node
// listening on socket, which takes and spreads its lists.
func PublishRevocations(ctx context.Context, socket string, data []byte) ([]PublishResult, error) {
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://ringvpn/revocations", bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no ringvpn answers on %s (is `ringvpn up` running? is control.socket the same?): %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return nil, fmt.Errorf("the node on %s does not take revocation lists (an older ringvpn?): %s", socket, resp.Status)
		}
		return nil, fmt.Errorf("the node on %s refused the file: %s", socket, strings.TrimSpace(string(msg)))
	}
	var res []PublishResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("answer from %s: %w", socket, err)
	}
	return res, nil
}
