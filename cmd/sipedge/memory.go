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
	releaseTick    = time.Second
	idleAllocBytes = 2 << 20 // allocated per tick below which the process counts as quiet
	// quietBeforeRelease is how long the quiet must last after a busy tick before the
	// first release, releaseEvery how many quiet ticks apart the next ones come.
	quietBeforeRelease = 2
	releaseEvery       = 5
	minRetainedBytes   = 32 << 20 // not worth a forced GC below this
	// maxIdleReleases bounds the forced GCs of one quiet period: transactions finished
	// just before the load stopped stay for up to 32 s (RFC timers), so the first
	// releases return only part of the peak; after that the heap is what it is.
	maxIdleReleases = 8
)

// releaser decides, tick by tick, when to give memory back: only after load, once it has
// been quiet for quietBeforeRelease ticks, then every releaseEvery quiet ticks, at most
// maxIdleReleases times. Never at start-up or during a quiet period that followed no load:
// a forced GC that coincides with traffic starting costs that traffic latency.
type releaser struct {
	quiet int  // consecutive quiet ticks
	load  bool // a busy tick came since the last quiet period's releases ended
}

// step takes what the process allocated during one tick and the heap memory it holds
// from the OS, and reports whether to release now.
func (r *releaser) step(allocated, retained uint64) bool {
	if allocated > idleAllocBytes {
		r.quiet, r.load = 0, true
		return false
	}
	r.quiet++
	n := r.quiet - quietBeforeRelease
	if !r.load || n < 0 || n%releaseEvery != 0 {
		return false
	}
	if n/releaseEvery >= maxIdleReleases-1 {
		r.load = false // the last release of this quiet period
	}
	return retained > minRetainedBytes
}

// runIdleRelease forces a GC and returns freed memory to the OS when the process turns
// idle after a load peak (see releaser), until ctx ends.
func runIdleRelease(ctx context.Context, log zerolog.Logger) error {
	samples := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	tick := time.NewTicker(releaseTick)
	defer tick.Stop()
	var lastAllocs uint64
	var r releaser
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
		if r.step(allocated, retained) {
			debug.FreeOSMemory()
			log.Debug().Uint64("retained_bytes", retained).Int("quiet_seconds", r.quiet).Msg("idle after load: memory returned to the OS")
		}
	}
}
