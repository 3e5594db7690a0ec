//go:build race

package acl

// raceEnabled scales the heavy tests down under the race detector, which slows them ~10×.
const raceEnabled = true
