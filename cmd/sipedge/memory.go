package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/rs/zerolog"
)

// Giving memory back after a load peak. Under load the heap holds every lingering SIP
// transaction; once the load stops, an idle process allocates next to nothing, so no GC
// cycle runs and the runtime keeps the peak's pages until its forced GC about two minutes
// later (notes, trap D). runIdleRelease notices the quiet and returns the memory at once.
const (
	releaseInterval  = 5 * time.Second
	idleAllocBytes   = 8 << 20  // allocated per interval below which the process counts as idle
	minRetainedBytes = 32 << 20 // not worth a forced GC below this
	// maxIdleReleases bounds the forced GCs of one quiet period: transactions finished
	// just before the load stopped stay live for up to 32 s (RFC timers), so the first
	// releases return only part of the peak; after that the heap is what it is.
	maxIdleReleases = 8
)

// releaseStep is the decision of one interval: allocated is what the process allocated
// during it, retained the heap memory it holds from the OS. It returns the new count of
// consecutive idle intervals and whether to release now.
func releaseStep(idleTicks int, allocated, retained uint64) (int, bool) {
	if allocated > idleAllocBytes {
		return 0, false
	}
	idleTicks++
	return idleTicks, idleTicks <= maxIdleReleases && retained > minRetainedBytes
}

// runIdleRelease forces a GC and returns freed memory to the OS when the process turns
// idle after a load peak (see releaseStep), until ctx ends.
func runIdleRelease(ctx context.Context, log zerolog.Logger) error {
	samples := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	tick := time.NewTicker(releaseInterval)
	defer tick.Stop()
	var lastAllocs uint64
	idle := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		metrics.Read(samples)
		var v [4]uint64
		for i, s := range samples {
			if s.Value.Kind() == metrics.KindUint64 {
				v[i] = s.Value.Uint64()
			}
		}
		allocated := v[0] - lastAllocs
		lastAllocs = v[0]
		retained := v[1] + v[2] + v[3]
		var release bool
		if idle, release = releaseStep(idle, allocated, retained); release {
			debug.FreeOSMemory()
			log.Debug().Uint64("retained_bytes", retained).Int("idle_intervals", idle).Msg("idle: memory returned to the OS")
		}
	}
}
