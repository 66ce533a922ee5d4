//go:build race

package wal

// raceEnabled: the race detector changes what allocates, so allocation
// counts are checked only without it.
const raceEnabled = true
