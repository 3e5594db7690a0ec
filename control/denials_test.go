package control

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func denialOf(account, trunk string, port uint16) Denial {
	return Denial{Time: time.Now(), Src: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.7"), port), Method: "INVITE",
		Trunk: trunk, Account: account, Verdict: "no_credential", CallID: fmt.Sprint(port)}
}

func ports(ds []Denial) []uint16 {
	out := make([]uint16, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.Src.Port())
	}
	return out
}

func TestDenialsBacklogIsBoundedAndPerAccount(t *testing.T) {
	f := NewDenials(4, 0, 0, 0)
	f.Publish(denialOf("A", "t1", 1)) // pushed out of the ring by the four below
	f.Publish(denialOf("A", "t1", 2))
	f.Publish(denialOf("B", "t2", 3))
	f.Publish(denialOf("", "", 4)) // no trunk: admin only
	f.Publish(denialOf("A", "t1", 5))

	for _, tc := range []struct {
		name    string
		account string
		admin   bool
		want    []uint16
	}{
		{"account A", "A", false, []uint16{2, 5}},
		{"account B", "B", false, []uint16{3}},
		{"unknown account", "C", false, []uint16{}},
		{"empty account is not the admin", "", false, []uint16{}},
		{"admin", "", true, []uint16{2, 3, 4, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, backlog, err := f.Subscribe(tc.account, tc.admin)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := ports(backlog); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("backlog %v, want %v (oldest first)", got, tc.want)
			}
		})
	}
}

func TestDenialsLiveFanOutAndSlowSubscriber(t *testing.T) {
	f := NewDenials(8, 0, 0, 2)
	slow, _, _ := f.Subscribe("A", false)
	defer slow.Close()
	fast, _, _ := f.Subscribe("A", false)
	defer fast.Close()
	other, _, _ := f.Subscribe("B", false)
	defer other.Close()

	for p := uint16(1); p <= 5; p++ {
		f.Publish(denialOf("A", "t1", p))
		if d := <-fast.C(); d.Src.Port() != p { // the fast one reads each at once
			t.Fatalf("fast subscriber got %d, want %d", d.Src.Port(), p)
		}
	}
	if got := []uint16{(<-slow.C()).Src.Port(), (<-slow.C()).Src.Port()}; got[0] != 1 || got[1] != 2 {
		t.Errorf("slow subscriber kept %v, want the first two (its buffer)", got)
	}
	select {
	case d := <-slow.C():
		t.Errorf("slow subscriber got %v beyond its buffer", d)
	default:
	}
	if slow.Dropped() != 3 || fast.Dropped() != 0 {
		t.Errorf("dropped: slow %d fast %d, want 3 and 0", slow.Dropped(), fast.Dropped())
	}
	select {
	case d := <-other.C():
		t.Errorf("account B saw account A's denial %v", d)
	default:
	}
	pub, dropped, subs := f.Stats()
	if pub != 5 || dropped != 3 || subs != 3 {
		t.Errorf("Stats = %d published, %d dropped, %d subscribers; want 5, 3, 3", pub, dropped, subs)
	}
}

func TestDenialsSubscriberLimits(t *testing.T) {
	f := NewDenials(0, 4, 2, 0)
	sub := func(account string, admin bool) (*DenialSub, error) {
		s, _, err := f.Subscribe(account, admin)
		return s, err
	}
	a1, _ := sub("A", false)
	if _, err := sub("A", false); err != nil {
		t.Fatal(err)
	}
	if _, err := sub("A", false); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("third stream of one account: %v, want ErrTooManySubscribers", err)
	}
	if _, err := sub("B", false); err != nil {
		t.Fatal(err)
	}
	if _, err := sub("B", false); err != nil {
		t.Fatal(err)
	}
	if _, err := sub("", true); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("fifth stream: %v, want ErrTooManySubscribers", err)
	}
	a1.Close()
	a1.Close() // idempotent: frees one place, not two
	if _, err := sub("", true); err != nil {
		t.Fatalf("after a close: %v", err)
	}
	if _, err := sub("C", false); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("after one close and one new stream the feed is full again: %v", err)
	}
	if _, _, n := f.Stats(); n != 4 {
		t.Errorf("%d subscribers, want 4", n)
	}

	f.Close()
	select {
	case <-f.Done():
	default:
		t.Error("Done not closed by Close")
	}
	f.Close() // idempotent
	if _, err := sub("D", false); !errors.Is(err, ErrDenialsClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrDenialsClosed", err)
	}
}

// TestDenialsConcurrent publishes, subscribes and closes at once (run with -race).
func TestDenialsConcurrent(t *testing.T) {
	f := NewDenials(16, 8, 8, 4)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range 4 {
		wg.Go(func() {
			for j := range 2000 {
				f.Publish(denialOf([]string{"A", "B", ""}[j%3], "t", uint16(i*10000+j)))
			}
		})
	}
	var readers sync.WaitGroup
	for i := range 6 {
		readers.Go(func() {
			for {
				s, _, err := f.Subscribe([]string{"A", "B"}[i%2], i == 5)
				if err != nil {
					continue
				}
				for range 10 {
					select {
					case <-s.C():
					case <-stop:
						s.Close()
						return
					}
				}
				s.Close()
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if pub, _, subs := f.Stats(); pub != 8000 || subs != 0 {
		t.Errorf("published %d (want 8000), %d subscribers left (want 0)", pub, subs)
	}
}
