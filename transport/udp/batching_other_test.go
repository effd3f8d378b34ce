//go:build !linux

package udp_test

const batching = false
