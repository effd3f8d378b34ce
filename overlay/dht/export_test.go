package dht

import (
	"context"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
)

// PutRecordUnchecked sends rec to the owner of key as PutRecord does but
// without the writer's checks, as a faulty or hostile member could: the
// storing node must refuse what is wrong.
func (d *DHT) PutRecordUnchecked(ctx context.Context, key overlay.Address, rec *SignedRecord) error {
	data, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	now := time.Now()
	it := &item{Kind: kindRecord, Version: d.newVersion(now), Expires: rec.Expires.UnixNano(), Data: data}
	return d.write(ctx, opPut, key, it)
}

// PutUnchecked is Put without the writer's checks.
func (d *DHT) PutUnchecked(ctx context.Context, key overlay.Address, value []byte, ttl time.Duration) error {
	now := time.Now()
	it := &item{Kind: kindPlain, Version: d.newVersion(now), Expires: now.Add(ttl).UnixNano(), Data: value}
	return d.write(ctx, opPut, key, it)
}
