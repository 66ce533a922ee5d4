//go:build !race

package integrationtest

const raceEnabled = false
