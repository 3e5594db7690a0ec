package sip

import (
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// connLimiter bounds TCP connections: in all (below the process's RLIMIT_NOFILE, so the
// edge never runs out of descriptors for its own sockets and store connections) and per
// source (each source's fair share; a listed PBX gets a larger one). Connections over a
// bound are closed at accept, counted. Safe for concurrent use; its map holds only
// sources with at least one open connection, so it is bounded by maxTotal.
type connLimiter struct {
	mu                      sync.Mutex
	per                     map[netip.Addr]int
	total                   int
	maxTotal                int
	maxPerSource, maxListed int
}

// Defaults of the TCP connection bounds.
const (
	DefaultMaxTCPConns          = 20000
	DefaultMaxTCPConnsPerSource = 32
	DefaultMaxTCPConnsListed    = 512
)

func newConnLimiter(total, perSource, listed int) *connLimiter {
	return &connLimiter{per: map[netip.Addr]int{}, maxTotal: min(total, fdBudget()), maxPerSource: perSource, maxListed: listed}
}

// fdBudget is three quarters of the soft RLIMIT_NOFILE (the rest is for listeners,
// upstream connections, the store, files), or effectively unbounded when it cannot be
// read.
func fdBudget() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur == 0 {
		return 1 << 30
	}
	return int(min(r.Cur, 1<<30) * 3 / 4)
}

// acquire takes one connection for src, or reports why not ("" when taken).
func (l *connLimiter) acquire(src netip.Addr, listed bool) string {
	k := sourceKey(src.Unmap())
	per := l.maxPerSource
	if listed {
		per = l.maxListed
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.maxTotal:
		return "total"
	case l.per[k] >= per:
		return "source"
	}
	l.total++
	l.per[k]++
	return ""
}

func (l *connLimiter) release(src netip.Addr) {
	k := sourceKey(src.Unmap())
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.per[k] <= 1 {
		delete(l.per, k)
	} else {
		l.per[k]--
	}
}

// open returns the connections held in all, and by src's key.
func (l *connLimiter) open(src netip.Addr) (total, bySource int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.per[sourceKey(src.Unmap())]
}

// limitedConn gives its connection's place back when closed (once), and holds its peer
// to a deadline for each message header (headerdeadline.go): sipgo's own read deadline
// is clamped to it while a header is pending, and a read past it ends the connection.
type limitedConn struct {
	net.Conn
	lim  *connLimiter
	src  netip.Addr
	once sync.Once

	headerTimeout time.Duration // 0: no header deadline
	clock         headerClock
}

func (c *limitedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.headerTimeout <= 0 {
		return n, err
	}
	now := time.Now()
	if d := c.clock.deadline(c.headerTimeout); !d.IsZero() && now.After(d) {
		return 0, errHeaderTimeout // the header pending before this read came too slowly
	}
	c.clock.feed(b[:n], now)
	if d := c.clock.deadline(c.headerTimeout); !d.IsZero() {
		if now.After(d) {
			return 0, errHeaderTimeout
		}
		_ = c.Conn.SetReadDeadline(d) // the next read must not wait past it
	}
	return n, err
}

// SetReadDeadline is sipgo's idle deadline, clamped to the pending header's.
func (c *limitedConn) SetReadDeadline(t time.Time) error {
	if d := c.clock.deadline(c.headerTimeout); !d.IsZero() && c.headerTimeout > 0 && (t.IsZero() || d.Before(t)) {
		t = d
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.lim.release(c.src) })
	return c.Conn.Close()
}
