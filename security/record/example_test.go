package record_test

import (
	"bytes"
	"fmt"

	"github.com/ringvpn/ringvpn/security/record"
)

func Example() {
	// Both ends of a DTLS session export the same material; with pion/dtls:
	//
	//	state, _ := conn.ConnectionState()
	//	material, err := state.ExportKeyingMaterial(record.ExporterLabel, nil, record.ExporterLen)
	material := bytes.Repeat([]byte{0x5a}, record.ExporterLen)
	clientID := [record.ConnIDLen]byte{'c', 'l', 'i', 'e', 'n', 't'}
	serverID := [record.ConnIDLen]byte{'s', 'e', 'r', 'v', 'e', 'r'}

	// The client seals towards the server's connection ID...
	sendKey, sendIV, _, _, err := record.KeysFromExporter(material, true)
	if err != nil {
		panic(err)
	}
	sealer, err := record.NewSealer(sendKey, sendIV, serverID)
	if err != nil {
		panic(err)
	}
	// ...and the server opens what is addressed to its own.
	_, _, recvKey, recvIV, err := record.KeysFromExporter(material, false)
	if err != nil {
		panic(err)
	}
	opener, err := record.NewOpener(recvKey, recvIV, serverID, record.DefaultWindow)
	if err != nil {
		panic(err)
	}
	_ = clientID // the server's Sealer would address the client's ID

	// Seal in place: header room before the payload, tag room after it.
	payload := []byte("ethernet frame")
	buf := make([]byte, record.HeaderLen+len(payload)+record.TagLen)
	copy(buf[record.HeaderLen:], payload)
	rec, err := sealer.Seal(buf, 1, buf[record.HeaderLen:record.HeaderLen+len(payload)])
	if err != nil {
		panic(err)
	}

	// Open in place.
	kind, seq, plaintext, err := opener.Open(rec[record.HeaderLen:], rec)
	fmt.Printf("kind %d seq %d %q %v\n", kind, seq, plaintext, err)
	_, _, _, err = opener.Open(rec[record.HeaderLen:], rec)
	fmt.Println(err)
	// Output:
	// kind 1 seq 0 "ethernet frame" <nil>
	// record: replayed sequence number
}
