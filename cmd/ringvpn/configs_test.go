package main

import (
	"reflect"
	"testing"

	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/config"
	"github.com/ringvpn/ringvpn/cmd/ringvpn/internal/node"
)

// The example configuration documents every key with its default: loading
// it must give exactly the defaults, so it can't drift from the code.
func TestExampleConfig_IsTheDefaults(t *testing.T) {
	got := node.Default()
	if err := config.Load("../../configs/ringvpn.yaml", "", &got); err != nil {
		t.Fatal(err)
	}
	if want := node.Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("configs/ringvpn.yaml loads as\n%+v\nbut the defaults are\n%+v", got, want)
	}
}
