package store_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/acl"
	"github.com/sipedge/sipedge/store"
	"github.com/sipedge/sipedge/store/storetest"
)

func TestParseRedisURL(t *testing.T) {
	for _, tc := range []struct {
		name, url, mode, desc, err string
	}{
		{"single", "redis://127.0.0.1:6379/2", store.RedisSingle, "127.0.0.1:6379 db 2", ""},
		{"tls", "rediss://redis.example.org:6380/0", store.RedisSingle, "redis.example.org:6380 db 0", ""},
		{"sentinel", "redis+sentinel://192.0.2.1:26379,192.0.2.2:26379/mymaster/3", store.RedisSentinel,
			"sentinel 192.0.2.1:26379,192.0.2.2:26379 master mymaster db 3", ""},
		{"sentinel default db", "redis+sentinel://192.0.2.1:26379/mymaster", store.RedisSentinel,
			"sentinel 192.0.2.1:26379 master mymaster db 0", ""},
		{"sentinel tls ipv6", "rediss+sentinel://[2001:db8::1]:26379/m/0", store.RedisSentinel,
			"sentinel [2001:db8::1]:26379 master m db 0", ""},
		{"cluster", "redis+cluster://192.0.2.1:6379,192.0.2.2:6379", store.RedisCluster,
			"cluster 192.0.2.1:6379,192.0.2.2:6379", ""},
		{"cluster db 0", "redis+cluster://192.0.2.1:6379/0", store.RedisCluster, "cluster 192.0.2.1:6379", ""},
		{"cluster db 1", "redis+cluster://192.0.2.1:6379/1", "", "", "only database 0"},
		{"sentinel no master", "redis+sentinel://192.0.2.1:26379", "", "", "mastername"},
		{"sentinel no port", "redis+sentinel://192.0.2.1/m/0", "", "", "host:port"},
		{"sentinel password", "redis+sentinel://:pw@192.0.2.1:26379/m/0", "", "", "password"},
		{"single password", "redis://:pw@192.0.2.1:6379/0", "", "", "password"},
		{"sentinel query", "redis+sentinel://192.0.2.1:26379/m/0?x=1", "", "", "query"},
		{"sentinel bad db", "redis+sentinel://192.0.2.1:26379/m/x", "", "", "database"},
		{"scheme", "http://192.0.2.1:6379", "", "", "scheme"},
		{"no scheme", "192.0.2.1:6379", "", "", "want redis://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := store.ParseRedisURL(tc.url)
			if tc.err != "" {
				if err == nil || !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want ErrInvalid mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Mode != tc.mode || got.Describe() != tc.desc {
				t.Fatalf("%s %q, want %s %q", got.Mode, got.Describe(), tc.mode, tc.desc)
			}
		})
	}
}

// TestRestore (both backends): the last good data set Watch kept — accounts with token
// hashes, ACLs, credentials with HA1s, trunks — survives an empty store (the watcher keeps
// serving and reports the incident), and Restore writes it back in one transaction: a new
// epoch, a version above the backup's, the store's and the floor, every index rebuilt
// (ids, domains and usernames taken again), one audit entry per account, and the watcher
// applies it and ends the incident.
func TestRestore(t *testing.T) {
	backends := map[string]func(t *testing.T, reg *prometheus.Registry) *store.Store{
		"bolt": func(t *testing.T, reg *prometheus.Registry) *store.Store {
			return openBoltDir(t, filepath.Join(t.TempDir(), "data"), store.WithResync(200*time.Millisecond), store.WithMetrics(reg))
		},
	}
	if os.Getenv("SIPEDGE_TEST_REDIS") != "" {
		backends["redis"] = func(t *testing.T, reg *prometheus.Registry) *store.Store {
			ro := redisOptions(t)
			return openRedisStore(t, ro, testPrefix(t, ro), store.WithResync(200*time.Millisecond), store.WithMetrics(reg))
		}
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s := open(t, reg)
			ok := mustV(t)
			seed(t, s)
			_, _, err := s.UpdateCredential(ctx, acc, "cred-1", func(c *acl.Credential) error {
				c.HA1MD5, c.HA1SHA256 = "md5ha1", "sha256ha1"
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			ok(s.CreateAccount(ctx, acl.Account{AuthID: accB, TokenHash: "hb"}))
			v := ok(s.CreateACL(ctx, acl.IPACL{UUID: "acl-b", Account: accB, Entries: []acl.Entry{mkEntry("b1", "198.51.100.0/24")}}))
			waitFor, _ := storetest.StartWatch(t, s)
			waitFor(v)
			// An incremental ACL write lands in the kept data set too.
			_, v, err = s.UpdateACL(ctx, acc, "acl-1", func(a *acl.IPACL) error {
				a.Entries = append(a.Entries, mkEntry("e2", "203.0.113.0/24"))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(v)
			good := s.LastGood()
			if good == nil || good.Version != v {
				t.Fatalf("LastGood: %+v, want version %d", good, v)
			}
			want := map[string]int{"accounts": 2, "ipacls": 2, "entries": 3, "credentials": 1, "trunks": 1}
			if fmt.Sprint(good.Counts()) != fmt.Sprint(want) {
				t.Fatalf("LastGood counts %v, want %v", good.Counts(), want)
			}
			if s.Incident() != nil {
				t.Fatalf("incident before any loss: %+v", s.Incident())
			}

			// Data loss (no emptied marker): the watcher keeps serving and reports it.
			lost := ok(store.WipeObjects(ctx, s))
			eventually(t, "the incident", func() bool { return s.Incident() != nil })
			if inc := s.Incident(); inc.SnapshotVersion != v || inc.StoreVersion != lost {
				t.Fatalf("incident %+v, want snapshot %d store %d", inc, v, lost)
			}
			if got := s.AppliedVersion(); got != v {
				t.Fatalf("applied %d during the incident, want %d kept", got, v)
			}
			if got := metricValue(t, reg, "sipedge_store_incident"); got != 1 {
				t.Fatalf("sipedge_store_incident = %v during the incident", got)
			}
			if b := s.LastGood(); b.Version != v {
				t.Fatalf("LastGood during the incident: version %d, want %d", b.Version, v)
			}
			// An object written into the emptied store is served (the operator's choice),
			// yet the pre-incident data set stays pinned for the restore.
			adopted := ok(s.CreateACL(ctx, acl.IPACL{UUID: "acl-new", Account: acc, Entries: []acl.Entry{mkEntry("n1", "198.51.100.99")}}))
			if snap := waitFor(adopted); snap.Allows("t1", mustAddr(t, "192.0.2.9")) {
				t.Fatalf("the snapshot of version %d still serves the pre-incident trunk", snap.Version())
			}
			eventually(t, "the incident to end with the adopted write", func() bool { return s.Incident() == nil })
			if pv, pending := s.RestorePending(); !pending || pv != v {
				t.Fatalf("RestorePending %d %v, want %d", pv, pending, v)
			}
			if b := s.LastGood(); b.Version != v || fmt.Sprint(b.Counts()) != fmt.Sprint(want) {
				t.Fatalf("LastGood after a write into the emptied store: version %d %v, want the pinned %d", b.Version, b.Counts(), v)
			}
			before := mustHead(t, s)

			rv, err := s.Restore(ctx, s.LastGood(), store.RestoreOptions{FromNode: "node-a", MinVersion: adopted + 40, RequestID: "req-1"})
			if err != nil {
				t.Fatal(err)
			}
			if rv != adopted+41 {
				t.Fatalf("restored at version %d, want %d (floor+1)", rv, adopted+41)
			}
			after := mustHead(t, s)
			if after.Version != rv || after.Epoch == before.Epoch || after.Epoch == "" {
				t.Fatalf("head after restore %+v (before %+v)", after, before)
			}
			snap := waitFor(rv)
			if !snap.Allows("t1", mustAddr(t, "203.0.113.9")) || !snap.Allows("t1", mustAddr(t, "192.0.2.9")) {
				t.Fatal("restored snapshot does not allow the restored entries")
			}
			if _, pending := s.RestorePending(); pending {
				t.Fatal("restore still pending after the restored data set was applied")
			}
			if b := s.LastGood(); b.Version != rv {
				t.Fatalf("LastGood after the restore: version %d, want %d", b.Version, rv)
			}
			if _, err := s.GetACL(ctx, acc, "acl-new"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the ACL written during the incident survived the restore: %v", err)
			}
			if got := metricValue(t, reg, "sipedge_store_incident"); got != 0 {
				t.Fatalf("sipedge_store_incident = %v after the restore", got)
			}
			c, err := s.GetCredential(ctx, acc, "cred-1")
			if err != nil || c.HA1MD5 != "md5ha1" || c.HA1SHA256 != "sha256ha1" {
				t.Fatalf("restored credential %+v, %v", c, err)
			}
			if a, err := s.Account(ctx, accB); err != nil || a.TokenHash != "hb" {
				t.Fatalf("restored account %+v, %v", a, err)
			}
			// Indexes rebuilt: ids, usernames and domains are taken.
			if _, err := s.CreateACL(ctx, acl.IPACL{UUID: "acl-b", Account: acc, Entries: []acl.Entry{mkEntry("x", "198.51.100.1")}}); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("ACL id after restore: %v, want ErrConflict", err)
			}
			if _, err := s.CreateCredential(ctx, acl.Credential{UUID: "cred-2", Account: acc, Name: "c", Username: "alice"}); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("username after restore: %v, want ErrConflict", err)
			}
			if _, err := s.CreateTrunk(ctx, acl.Trunk{ID: "t2", Account: acc, Domain: "T1.example.org"}); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("domain after restore: %v, want ErrConflict", err)
			}
			if _, err := s.DeleteACL(ctx, acc, "acl-1"); err == nil {
				t.Fatal("ACL used by the restored trunk deleted")
			}
			for _, a := range []string{acc, accB} {
				entries, _, err := s.Audit(ctx, a, store.Page{Limit: 1})
				if err != nil || len(entries) != 1 {
					t.Fatalf("audit of %s: %v %v", a, entries, err)
				}
				e := entries[0]
				if e.Action != store.AuditRestore || e.Kind != store.AuditKindDataset || e.Version != rv || e.Actor != store.ActorAdmin ||
					e.RequestID != "req-1" || !strings.Contains(string(e.After), `"node-a"`) {
					t.Fatalf("audit entry %+v after %s", e, e.After)
				}
			}
		})
	}
}

func TestRestoreRefusesNothing(t *testing.T) {
	s := openBoltDir(t, filepath.Join(t.TempDir(), "data"))
	if _, err := s.Restore(ctx, nil, store.RestoreOptions{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("nil backup: %v", err)
	}
	if _, err := s.Restore(ctx, &store.Backup{}, store.RestoreOptions{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("backup without accounts: %v", err)
	}
}

func mustHead(t *testing.T, s *store.Store) store.Head {
	t.Helper()
	h, err := s.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRestoreLarge measures a restore of a 100,000-entry data set (1,000 ACLs of 100
// entries, 1,000 trunks, 1,000 credentials, 10 accounts): the Restore call, and until a
// watcher of another Store serves the restored version. Gated: SIPEDGE_BENCH_RESTORE=1
// (with SIPEDGE_TEST_REDIS for the Redis figure).
func TestRestoreLarge(t *testing.T) {
	if os.Getenv("SIPEDGE_BENCH_RESTORE") == "" {
		t.Skip("set SIPEDGE_BENCH_RESTORE=1 to run")
	}
	b := &store.Backup{Version: 1000, Epoch: "old"}
	for a := range 10 {
		b.Accounts = append(b.Accounts, acl.Account{AuthID: fmt.Sprintf("MA%018d", a), TokenHash: "hmac-sha256:00:00"})
	}
	now := time.Now().UTC().Truncate(time.Second)
	for i := range 1000 {
		account := b.Accounts[i%10].AuthID
		a := acl.IPACL{UUID: fmt.Sprintf("acl-%04d", i), Account: account, Name: "pbx", CreatedAt: now, UpdatedAt: now}
		for j := range 100 {
			a.Entries = append(a.Entries, acl.Entry{ID: fmt.Sprintf("e-%d-%d", i, j),
				IPAddress: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1), Enabled: true, CreatedAt: now, UpdatedAt: now})
		}
		b.ACLs = append(b.ACLs, a)
		b.Credentials = append(b.Credentials, acl.Credential{UUID: fmt.Sprintf("cred-%04d", i), Account: account, Name: "c",
			Username: fmt.Sprintf("user%04d", i), HA1MD5: strings.Repeat("a", 32), HA1SHA256: strings.Repeat("b", 64), CreatedAt: now, UpdatedAt: now})
		b.Trunks = append(b.Trunks, acl.Trunk{ID: acl.TrunkID(fmt.Sprintf("trunk-%04d", i)), Account: account, Name: "t",
			Direction: acl.DirectionOutbound, Status: acl.TrunkEnabled, Domain: fmt.Sprintf("trunk-%04d.example.org", i),
			ACLUUID: a.UUID, CredentialUUID: fmt.Sprintf("cred-%04d", i), CreatedAt: now, UpdatedAt: now})
	}
	type pair struct{ writer, reader *store.Store }
	backends := map[string]func(t *testing.T) pair{
		"bolt": func(t *testing.T) pair {
			s := openBoltDir(t, filepath.Join(t.TempDir(), "data"))
			return pair{s, s}
		},
	}
	if os.Getenv("SIPEDGE_TEST_REDIS") != "" {
		backends["redis"] = func(t *testing.T) pair {
			ro := redisOptions(t)
			p := testPrefix(t, ro)
			return pair{openRedisStore(t, ro, p), openRedisStore(t, ro, p, store.WithTimeout(30*time.Second))}
		}
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			ps := open(t)
			waitFor, _ := storetest.StartWatch(t, ps.reader)
			waitFor(0)
			start := time.Now()
			v, err := ps.writer.Restore(ctx, b, store.RestoreOptions{FromNode: "bench"})
			if err != nil {
				t.Fatal(err)
			}
			restored := time.Since(start)
			snap := waitFor(v)
			served := time.Since(start)
			if !snap.Allows("trunk-0999", mustAddr(t, "10.3.249.100")) {
				t.Fatalf("restored snapshot misses the last entry: version %d, problems %v", snap.Version(), snap.Problems()[:min(3, len(snap.Problems()))])
			}
			if g := ps.reader.LastGood(); g == nil || g.Counts()["entries"] != 100_000 {
				t.Fatalf("watcher keeps %v", g.Counts())
			}
			t.Logf("%s: restore of 100,000 entries (1,000 ACLs, 1,000 credentials, 1,000 trunks, 10 accounts) committed in %v, served by a watcher after %v",
				name, restored.Round(time.Millisecond), served.Round(time.Millisecond))
		})
	}
}
