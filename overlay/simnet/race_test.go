//go:build race

package simnet

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = true
