package hits

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
)

// fakeClock is a settable clock.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *fakeClock) now() time.Time           { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) add(d time.Duration)      { c.ns.Add(int64(d)) }
func stat(n uint64, at time.Time) acl.HitStat { return acl.HitStat{Count: n, LastMatchedAt: at} }

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func TestRecordZeroAllocs(t *testing.T) {
	r := New()
	r.Record("MA1", "acl-1", "e1") // first sight adds the counter
	if got := testing.AllocsPerRun(1000, func() { r.Record("MA1", "acl-1", "e1") }); got != 0 {
		t.Errorf("Record allocates %v times per run after first sight", got)
	}
	var nilRec *Recorder
	if got := testing.AllocsPerRun(100, func() { nilRec.Record("MA1", "acl-1", "e1") }); got != 0 {
		t.Errorf("nil Record allocates %v", got)
	}
	if err := nilRec.Flush(context.Background(), nil); err != nil {
		t.Error(err)
	}
}

func TestFlushReportsDeltas(t *testing.T) {
	clk := newFakeClock(t0)
	r := New(WithClock(clk.now))
	var mem Memory
	ctx := context.Background()
	calls := 0
	flush := func(ctx context.Context, hs []acl.Hit) error { calls++; return mem.AddHits(ctx, hs) }

	for range 3 {
		r.Record("MA1", "acl-1", "e1")
	}
	r.Record("MA1", "acl-1", "e2")
	r.Record("MA2", "acl-9", "e1") // same entry id, other ACL and account: its own counter
	if err := r.Flush(ctx, flush); err != nil {
		t.Fatal(err)
	}
	got, _ := mem.Hits(ctx, "MA1", "acl-1")
	want := map[string]acl.HitStat{"e1": stat(3, t0), "e2": stat(1, t0)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after first flush: %v, want %v", got, want)
	}
	if got, _ := mem.Hits(ctx, "MA2", "acl-9"); got["e1"] != stat(1, t0) {
		t.Errorf("other account: %v", got)
	}

	// Deltas, not totals: the next flush adds only what came since, stamped with the
	// clock of its time.
	clk.add(30 * time.Second)
	r.Flush(ctx, func(context.Context, []acl.Hit) error { return nil }) // advances nothing: no hits
	r.Record("MA1", "acl-1", "e1")
	clk.add(5 * time.Second) // last_matched_at is when the hit was recorded (coarsely)
	if err := r.Flush(ctx, flush); err != nil {
		t.Fatal(err)
	}
	got, _ = mem.Hits(ctx, "MA1", "acl-1")
	want = map[string]acl.HitStat{"e1": stat(4, t0.Add(30*time.Second)), "e2": stat(1, t0)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after second flush: %v, want %v", got, want)
	}
	callsBefore := calls
	if err := r.Flush(ctx, flush); err != nil || calls != callsBefore {
		t.Errorf("a flush with nothing to report called the sink (%d → %d, %v)", callsBefore, calls, err)
	}
}

func TestFlushFailureKeepsCounts(t *testing.T) {
	clk := newFakeClock(t0)
	reg := prometheus.NewRegistry()
	r := New(WithClock(clk.now), WithRegisterer(reg))
	ctx := context.Background()
	down := errors.New("store down")
	r.Record("MA1", "acl-1", "e1")
	r.Record("MA1", "acl-1", "e1")
	if err := r.Flush(ctx, func(context.Context, []acl.Hit) error { return down }); !errors.Is(err, down) {
		t.Fatalf("Flush = %v, want the sink's error", err)
	}
	clk.add(time.Minute)
	r.tick()
	r.Record("MA1", "acl-1", "e1")
	var got []acl.Hit
	if err := r.Flush(ctx, func(_ context.Context, hs []acl.Hit) error { got = hs; return nil }); err != nil {
		t.Fatal(err)
	}
	want := []acl.Hit{{Account: "MA1", ACLUUID: "acl-1", EntryID: "e1", Count: 3, LastMatchedAt: t0.Add(time.Minute)}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("retried flush sent %v, want %v", got, want)
	}
	if ok, bad := metric(t, reg, "sipedge_entry_hit_flushes_total", "ok"), metric(t, reg, "sipedge_entry_hit_flushes_total", "error"); ok != 1 || bad != 1 {
		t.Errorf("flushes ok=%v error=%v", ok, bad)
	}
}

func TestIdleCountersRetired(t *testing.T) {
	r := New(WithIdleFlushes(2))
	ctx := context.Background()
	var mem Memory
	r.Record("MA1", "acl-1", "e1")
	for range 3 {
		_ = r.Flush(ctx, mem.AddHits)
	}
	if n := r.entries.Load(); n != 0 {
		t.Fatalf("%d counters held after 2 idle flushes, want 0", n)
	}
	r.Record("MA1", "acl-1", "e1") // comes back
	_ = r.Flush(ctx, mem.AddHits)
	if got, _ := mem.Hits(ctx, "MA1", "acl-1"); got["e1"].Count != 2 {
		t.Errorf("count %d after retirement and a new hit, want 2", got["e1"].Count)
	}
}

func TestMaxEntries(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := New(WithMaxEntries(2), WithRegisterer(reg))
	for i := range 5 {
		r.Record("MA1", "acl-1", fmt.Sprint("e", i))
	}
	var got []acl.Hit
	_ = r.Flush(context.Background(), func(_ context.Context, hs []acl.Hit) error { got = hs; return nil })
	if d := metric(t, reg, "sipedge_entry_hits_dropped_total", ""); len(got) != 2 || d != 3 {
		t.Errorf("%d entries reported, %v dropped; want 2 and 3", len(got), d)
	}
	if v := metric(t, reg, "sipedge_entry_hit_counters", ""); v != 2 {
		t.Errorf("counters gauge %v", v)
	}
}

// metric reads a counter or gauge from reg; label is the value of its one label ("" for none).
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// TestConcurrentRecordFlush counts exactly under concurrent Record, Flush and counter
// retirement (every flush retires idle counters). Run it with -race.
func TestConcurrentRecordFlush(t *testing.T) {
	r := New(WithIdleFlushes(1))
	var mem Memory
	ctx := context.Background()
	const workers, per, entries = 8, 5000, 7
	var wg sync.WaitGroup
	stop := make(chan struct{})
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-stop:
				return
			default:
				_ = r.Flush(ctx, mem.AddHits)
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				r.Record("MA1", "acl-1", fmt.Sprint("e", (w+i)%entries))
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-flushed
	_ = r.Flush(ctx, mem.AddHits)
	got, _ := mem.Hits(ctx, "MA1", "acl-1")
	var sum uint64
	for _, s := range got {
		sum += s.Count
	}
	if sum != workers*per || len(got) != entries {
		t.Errorf("counted %d hits over %d entries, want %d over %d", sum, len(got), workers*per, entries)
	}
}

func TestRun(t *testing.T) {
	r := New()
	var mem Memory
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, mem.AddHits, 20*time.Millisecond) }()
	r.Record("MA1", "acl-1", "e1")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := mem.Hits(ctx, "MA1", "acl-1"); got["e1"].Count == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not flush within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Hits recorded right before shutdown are flushed on the way out.
	r.Record("MA1", "acl-1", "e1")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got, _ := mem.Hits(context.Background(), "MA1", "acl-1"); got["e1"].Count != 2 {
		t.Errorf("after shutdown: %v, want 2 hits", got)
	}
}

func BenchmarkRecord(b *testing.B) {
	r := New()
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
	}
	for _, id := range ids {
		r.Record("MA1", "acl-1", id)
	}
	b.Run("one-entry", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Record("MA1", "acl-1", ids[0])
			}
		})
	})
	b.Run("64-entries", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				r.Record("MA1", "acl-1", ids[i&63])
				i++
			}
		})
	})
}
