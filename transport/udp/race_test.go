//go:build race

package udp_test

// raceEnabled skips allocation tests: the race detector allocates.
const raceEnabled = true
