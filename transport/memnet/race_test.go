//go:build race

package memnet

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = true
