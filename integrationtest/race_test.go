//go:build race

package integrationtest

// raceEnabled builds the service with the race detector when the tests run with it.
const raceEnabled = true
