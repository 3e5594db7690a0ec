package main

import "testing"

func TestReleaseStep(t *testing.T) {
	const big, small = minRetainedBytes + 1, minRetainedBytes - 1
	idle := 0
	var release bool
	// Under load: never.
	if idle, release = releaseStep(idle, idleAllocBytes+1, big); idle != 0 || release {
		t.Fatalf("busy interval: idle=%d release=%v", idle, release)
	}
	// The load stops: release on each of the first maxIdleReleases quiet intervals, then stop.
	for i := 1; i <= maxIdleReleases+3; i++ {
		idle, release = releaseStep(idle, 1<<20, big)
		if want := i <= maxIdleReleases; release != want || idle != i {
			t.Fatalf("quiet interval %d: idle=%d release=%v, want release=%v", i, idle, release, want)
		}
	}
	// A small heap is not worth a forced GC.
	if _, release = releaseStep(0, 0, small); release {
		t.Fatal("released a small heap")
	}
	// New load resets the count: the next quiet period releases again.
	idle, _ = releaseStep(idle, idleAllocBytes+1, big)
	if idle, release = releaseStep(idle, 0, big); idle != 1 || !release {
		t.Fatalf("after new load: idle=%d release=%v", idle, release)
	}
}
