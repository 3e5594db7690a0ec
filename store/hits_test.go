package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/control"
	"github.com/sipedge/sipedge/hits"
	"github.com/sipedge/sipedge/store"
	"github.com/sipedge/sipedge/store/storetest"
)

// The control API reads hit totals through its own interface.
var _ control.HitCounts = (*store.Store)(nil)

const accB = "MBBBBBBBBBBBBBBBBBBB"

// hitT0 has nanoseconds on purpose: stores keep last_matched_at to the microsecond.
var hitT0 = time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.UTC)

// at is hitT0+d as a store returns it.
func at(d time.Duration) time.Time { return hitT0.Add(d).Truncate(time.Microsecond) }

func hit(account, aclUUID, entry string, n uint64, last time.Time) acl.Hit {
	return acl.Hit{Account: account, ACLUUID: aclUUID, EntryID: entry, Count: n, LastMatchedAt: last}
}

func stat(n uint64, last time.Time) acl.HitStat { return acl.HitStat{Count: n, LastMatchedAt: last} }

// hitStores runs f against two "nodes": with the embedded store both are the one Store
// (one process owns the file); with SIPEDGE_TEST_REDIS, two Stores on one Redis data set
// (prefix is its key prefix; "" for the embedded store).
func hitStores(t *testing.T, f func(t *testing.T, a, b *store.Store, prefix string), opts ...store.Option) {
	t.Run("embedded", func(t *testing.T) {
		s := openBoltDir(t, filepath.Join(t.TempDir(), "data"), opts...)
		f(t, s, s, "")
	})
	t.Run("redis", func(t *testing.T) {
		ro := redisOptions(t)
		p := testPrefix(t, ro)
		f(t, openRedisStore(t, ro, p, opts...), openRedisStore(t, ro, p, opts...), p)
	})
}

func addHits(t *testing.T, s *store.Store, hs ...acl.Hit) {
	t.Helper()
	if err := s.AddHits(ctx, hs); err != nil {
		t.Fatalf("AddHits: %v", err)
	}
}

// wantHits checks the totals of one ACL: exactly want, times in UTC.
func wantHits(t *testing.T, s *store.Store, account, aclUUID string, want map[string]acl.HitStat) {
	t.Helper()
	got, err := s.Hits(ctx, account, aclUUID)
	if err != nil {
		t.Fatalf("Hits(%s, %s): %v", account, aclUUID, err)
	}
	if got == nil {
		t.Fatalf("Hits(%s, %s) = nil map", account, aclUUID)
	}
	same := maps.EqualFunc(got, want, func(g, w acl.HitStat) bool {
		return g.Count == w.Count && g.LastMatchedAt.Equal(w.LastMatchedAt) && g.LastMatchedAt.Location() == time.UTC
	})
	if !same {
		t.Fatalf("Hits(%s, %s) = %v, want %v", account, aclUUID, got, want)
	}
}

func TestHitsConformance(t *testing.T) {
	hitStores(t, func(t *testing.T, a, b *store.Store, _ string) {
		t.Run("summed across nodes, latest time kept", func(t *testing.T) {
			addHits(t, a, hit(acc, "acl-s", "e1", 3, hitT0.Add(2*time.Second)), hit(acc, "acl-s", "e2", 1, hitT0))
			addHits(t, b, hit(acc, "acl-s", "e1", 4, hitT0.Add(time.Second))) // older than a's
			want := map[string]acl.HitStat{"e1": stat(7, at(2*time.Second)), "e2": stat(1, at(0))}
			wantHits(t, a, acc, "acl-s", want)
			wantHits(t, b, acc, "acl-s", want)

			addHits(t, b, hit(acc, "acl-s", "e2", 5, hitT0.Add(3*time.Second)))
			want["e2"] = stat(6, at(3*time.Second))
			wantHits(t, a, acc, "acl-s", want)
		})

		t.Run("accounts and ACLs are isolated", func(t *testing.T) {
			addHits(t, a,
				hit(acc, "acl-i", "e1", 2, hitT0),
				hit(accB, "acl-i", "e1", 5, hitT0.Add(time.Minute)),
				hit(acc, "acl-j", "e1", 7, hitT0.Add(time.Hour)),
				// ':' may occur in ids: "a:b"+"c" and "a"+"b:c" are different ACLs.
				hit("a:b", "c", "e1", 1, hitT0), hit("a", "b:c", "e1", 9, hitT0))
			wantHits(t, b, acc, "acl-i", map[string]acl.HitStat{"e1": stat(2, at(0))})
			wantHits(t, b, accB, "acl-i", map[string]acl.HitStat{"e1": stat(5, at(time.Minute))})
			wantHits(t, b, acc, "acl-j", map[string]acl.HitStat{"e1": stat(7, at(time.Hour))})
			wantHits(t, b, "a:b", "c", map[string]acl.HitStat{"e1": stat(1, at(0))})
			wantHits(t, b, "a", "b:c", map[string]acl.HitStat{"e1": stat(9, at(0))})
			wantHits(t, b, acc, "acl-never-hit", map[string]acl.HitStat{})
			wantHits(t, b, accB, "acl-j", map[string]acl.HitStat{})
		})

		t.Run("one flush's hits of an entry merge; hits without time keep it", func(t *testing.T) {
			addHits(t, a,
				hit(acc, "acl-m", "e1", 2, hitT0.Add(time.Second)),
				hit(acc, "acl-m", "e1", 3, hitT0),
				hit(acc, "acl-m", "e2", 4, time.Time{}))
			wantHits(t, b, acc, "acl-m", map[string]acl.HitStat{"e1": stat(5, at(time.Second)), "e2": stat(4, time.Time{})})
			addHits(t, b, hit(acc, "acl-m", "e1", 1, time.Time{}), hit(acc, "acl-m", "e2", 1, hitT0))
			wantHits(t, a, acc, "acl-m", map[string]acl.HitStat{"e1": stat(6, at(time.Second)), "e2": stat(5, at(0))})
		})

		t.Run("what cannot be stored is skipped, the rest is added", func(t *testing.T) {
			err := a.AddHits(ctx, []acl.Hit{
				hit(acc, "acl-k", "e1", 1, hitT0),
				hit("", "acl-k", "e2", 1, hitT0),
				hit(acc, "", "e2", 1, hitT0),
				hit(acc, "acl-k", "", 1, hitT0),
				hit(acc, "acl-k", "x/y", 1, hitT0),
				hit(acc, "acl-k", "x\x00y", 1, hitT0),
				hit(acc, "acl-k", "zero", 0, hitT0),
				hit(acc, "acl-k", "huge", math.MaxInt64+1, hitT0),
				hit(acc, "acl-k", "far", 1, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)),
				// Merged, the two would overflow a Redis counter: the second is dropped.
				hit(acc, "acl-k", "big", math.MaxInt64, hitT0),
				hit(acc, "acl-k", "big", 1, hitT0.Add(time.Second)),
			})
			if err != nil {
				t.Fatalf("AddHits with bad hits: %v", err)
			}
			wantHits(t, b, acc, "acl-k", map[string]acl.HitStat{"e1": stat(1, at(0)), "big": stat(math.MaxInt64, at(0))})
		})

		t.Run("empty flush", func(t *testing.T) {
			if err := a.AddHits(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if err := a.AddHits(ctx, []acl.Hit{}); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("invalid ids are ErrInvalid", func(t *testing.T) {
			for _, c := range [][2]string{{"", "acl-s"}, {acc, ""}, {acc, "a/b"}, {"a/b", "acl-s"}, {acc, "a\nb"}} {
				if _, err := a.Hits(ctx, c[0], c[1]); !errors.Is(err, store.ErrInvalid) {
					t.Errorf("Hits(%q, %q): %v, want ErrInvalid", c[0], c[1], err)
				}
			}
		})

		t.Run("canceled context", func(t *testing.T) {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if err := a.AddHits(cctx, []acl.Hit{hit(acc, "acl-c", "e1", 1, hitT0)}); err == nil {
				t.Fatal("AddHits with a canceled context succeeded")
			}
			if _, err := a.Hits(cctx, acc, "acl-c"); err == nil {
				t.Fatal("Hits with a canceled context succeeded")
			}
			wantHits(t, b, acc, "acl-c", map[string]acl.HitStat{})
		})
	})
}

// TestHitsNotVersioned: hit counts are telemetry. Adding them bumps no version, changes
// nothing Load returns, writes no audit entry, publishes no notice and makes Watch apply
// nothing, even across several resyncs.
func TestHitsNotVersioned(t *testing.T) {
	hitStores(t, func(t *testing.T, a, b *store.Store, prefix string) {
		v := seed(t, a)
		head, err := a.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		before, err := a.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, audits, err := a.Audit(ctx, acc, store.Page{})
		if err != nil {
			t.Fatal(err)
		}
		waitFor, versions := storetest.StartWatch(t, a)
		waitFor(v)
		var notices atomic.Int64
		if prefix != "" {
			c := redis.NewClient(redisOptions(t))
			t.Cleanup(func() { _ = c.Close() })
			ps := c.Subscribe(ctx, prefix+"changes")
			t.Cleanup(func() { _ = ps.Close() })
			if _, err := ps.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			go func() {
				for range ps.Channel() {
					notices.Add(1)
				}
			}()
		}

		for i := range 20 {
			addHits(t, []*store.Store{a, b}[i%2], hit(acc, "acl-1", "e1", 1, hitT0.Add(time.Duration(i)*time.Second)))
		}
		time.Sleep(200 * time.Millisecond) // several resyncs (WithResync(30ms))

		wantHits(t, a, acc, "acl-1", map[string]acl.HitStat{"e1": stat(20, at(19*time.Second))})
		if h, err := b.Head(ctx); err != nil || h != head {
			t.Fatalf("Head after AddHits = %+v, %v; want %+v", h, err, head)
		}
		after, err := b.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("Load changed by AddHits:\nbefore %+v\nafter  %+v", before, after)
		}
		if _, n, err := a.Audit(ctx, acc, store.Page{}); err != nil || n != audits {
			t.Fatalf("audit entries after AddHits = %d, %v; want %d", n, err, audits)
		}
		if got := versions(); !slices.Equal(got, []uint64{v}) {
			t.Fatalf("Watch applied %v, want only %d", got, v)
		}
		if n := notices.Load(); n != 0 {
			t.Fatalf("AddHits published %d change notices", n)
		}
	}, store.WithResync(30*time.Millisecond))
}

// TestHitsConcurrent: parallel flushes from both nodes lose and double nothing (run
// under -race).
func TestHitsConcurrent(t *testing.T) {
	hitStores(t, func(t *testing.T, a, b *store.Store, _ string) {
		const writers, flushes = 6, 25
		acls := []string{"acl-p", "acl-q"}
		entries := []string{"e1", "e2", "e3"}
		var (
			mu   sync.Mutex
			want = map[string]map[string]acl.HitStat{}
			wg   sync.WaitGroup
		)
		for _, id := range acls {
			want[id] = map[string]acl.HitStat{}
		}
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				s := []*store.Store{a, b}[w%2]
				rng := rand.New(rand.NewPCG(uint64(w), 8))
				for range flushes {
					var hs []acl.Hit
					for range 1 + rng.IntN(4) {
						h := hit(acc, acls[rng.IntN(len(acls))], entries[rng.IntN(len(entries))],
							1+rng.Uint64N(10), hitT0.Add(time.Duration(rng.Int64N(int64(time.Hour)))))
						hs = append(hs, h)
					}
					if err := s.AddHits(ctx, hs); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for _, h := range hs {
						h.LastMatchedAt = h.LastMatchedAt.Truncate(time.Microsecond)
						want[h.ACLUUID][h.EntryID] = want[h.ACLUUID][h.EntryID].Add(h)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("AddHits: %v", err)
		}
		for _, id := range acls {
			wantHits(t, a, acc, id, want[id])
		}
	})
}

// TestHitsFromRecorders: two nodes' recorders flush into the store, one of them after a
// failed flush; the store shows the sum of both and the latest time.
func TestHitsFromRecorders(t *testing.T) {
	hitStores(t, func(t *testing.T, a, b *store.Store, _ string) {
		// Record stamps hits with a coarse clock that New and Flush advance.
		var now atomic.Int64
		now.Store(hitT0.UnixNano())
		clock := func() time.Time { return time.Unix(0, now.Load()) }

		r1 := hits.New(hits.WithClock(clock)) // node 1, clock at hitT0
		for range 3 {
			r1.Record(acc, "acl-r", "e1")
		}
		r1.Record(acc, "acl-r", "e2")
		if err := r1.Flush(ctx, a.AddHits); err != nil {
			t.Fatal(err)
		}
		now.Add(int64(time.Minute))
		r2 := hits.New(hits.WithClock(clock)) // node 2, a minute later
		r2.Record(acc, "acl-r", "e1")
		r2.Record(acc, "acl-r", "e1")
		if err := r2.Flush(ctx, b.AddHits); err != nil {
			t.Fatal(err)
		}
		wantHits(t, a, acc, "acl-r", map[string]acl.HitStat{"e1": stat(5, at(time.Minute)), "e2": stat(1, at(0))})

		r1.Record(acc, "acl-r", "e2") // stamped hitT0: r1's clock last moved at its flush
		down := errors.New("store down")
		if err := r1.Flush(ctx, func(context.Context, []acl.Hit) error { return down }); !errors.Is(err, down) {
			t.Fatalf("failing flush: %v", err)
		}
		wantHits(t, b, acc, "acl-r", map[string]acl.HitStat{"e1": stat(5, at(time.Minute)), "e2": stat(1, at(0))})
		if err := r1.Flush(ctx, a.AddHits); err != nil {
			t.Fatal(err)
		}
		// An older time does not move last_matched_at back.
		wantHits(t, b, acc, "acl-r", map[string]acl.HitStat{"e1": stat(5, at(time.Minute)), "e2": stat(2, at(0))})
	})
}

// TestHitsBoltPersist: the embedded store keeps hit counts across a restart; a fresh one
// has none.
func TestHitsBoltPersist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := store.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantHits(t, s, acc, "acl-1", map[string]acl.HitStat{}) // no bucket yet
	addHits(t, s, hit(acc, "acl-1", "e1", 4, hitT0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openBoltDir(t, dir)
	wantHits(t, s, acc, "acl-1", map[string]acl.HitStat{"e1": stat(4, at(0))})
	if v, err := s.Version(ctx); err != nil || v != 0 {
		t.Fatalf("Version = %d, %v; want 0", v, err)
	}
}

// TestHitsRedisUnavailable: with Redis cut off, AddHits and Hits fail with ErrUnavailable
// within the store timeout; the recorder keeps the deltas and the store has them exactly
// once after Redis is back.
func TestHitsRedisUnavailable(t *testing.T) {
	ro := redisOptions(t)
	p := testPrefix(t, ro)
	px := newCutProxy(t, ro.Addr)
	pro := *ro
	pro.Addr = px.addr
	pro.MaxRetries = -1
	s := openRedisStore(t, &pro, p, store.WithTimeout(300*time.Millisecond))
	other := openRedisStore(t, ro, p)
	rec := hits.New(hits.WithClock(func() time.Time { return hitT0 }))

	for range 3 {
		rec.Record(acc, "acl-u", "e1")
	}
	px.cut()
	start := time.Now()
	if err := rec.Flush(ctx, s.AddHits); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("flush with Redis down: %v, want ErrUnavailable", err)
	}
	if _, err := s.Hits(ctx, acc, "acl-u"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Hits with Redis down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("failing calls took %v", d)
	}
	rec.Record(acc, "acl-u", "e1")
	px.restore()
	eventually(t, "a flush after Redis is back", func() bool { return rec.Flush(ctx, s.AddHits) == nil })
	wantHits(t, other, acc, "acl-u", map[string]acl.HitStat{"e1": stat(4, at(0))})
}

// ExampleStore_AddHits wires a hit recorder to the store and reads the totals back.
func ExampleStore_AddHits() {
	dir, err := os.MkdirTemp("", "sipedge-hits-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	s, err := store.OpenBolt(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	rec := hits.New()
	rec.Record("MAXXXXXXXXXXXXXXXXXX", "acl-1", "entry-1")
	rec.Record("MAXXXXXXXXXXXXXXXXXX", "acl-1", "entry-1")
	if err := rec.Flush(context.Background(), s.AddHits); err != nil { // what Recorder.Run does every 10 s
		fmt.Println(err)
		return
	}
	hs, err := s.Hits(context.Background(), "MAXXXXXXXXXXXXXXXXXX", "acl-1")
	fmt.Println(hs["entry-1"].Count, err)
	// Output: 2 <nil>
}
