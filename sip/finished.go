package sip

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"time"

	"golang.org/x/sys/unix"
)

// Finished transactions, kept for the RFC windows to absorb retransmissions, live outside
// the Go heap: each is a record appended to a FIFO arena of mapped byte chunks, found
// through two maps from a key's hash to the record's position. Nothing in them holds a
// pointer, so the garbage collector neither scans nor counts them, and a record costs its
// bytes (≈ 60 bytes of header, 16 for each key's digest, the last response, our ACK) plus
// two map slots. Records leave in order, when their linger ends or to make room
// (maxFinished, maxFinishedBytes), oldest first. A collision of the index hash can only
// make a record unreachable (the later one wins its slot); a hit is always checked against
// the record's whole digest. Guarded by txTable.finMu.
//
// Record layout (little endian):
//
//	expire[8] flags[1] src flow[19] out flow[19] len(skey)[2] len(ckey)[2] len(resp)[2] len(ack)[2]
//	skey ckey resp ack
//
// where skey and ckey are the keys' digests (keyDigest, 16 bytes), or empty when the
// transaction has no such key.
type finStore struct {
	chunks  [][]byte // chunks in order; chunks[0] holds the oldest record
	used    []int    // bytes written into each chunk
	head    int      // offset of the oldest record in chunks[0]
	base    uint64   // sequence number of chunks[0]
	n       int      // records
	bytes   int      // bytes held by records
	spare   []byte   // a released chunk, reused
	srv     map[uint64]uint64
	cli     map[uint64]uint64
	touched bool // grew since the last shrink
}

const (
	finChunk     = 1 << 20
	finHeader    = 8 + 1 + 2*flowBytes + 8
	finInvite    = 1 << 0
	finAccepted  = 1 << 1 // an INVITE answered 2xx (RFC 6026 Accepted)
	finHasServer = 1 << 2
	// maxFinishedBytes bounds the arena: at about 350 bytes a transaction, 32 s of
	// 8000 calls/s.
	maxFinishedBytes = 192 << 20
)

// The chunks are mapped outside the Go heap. A heap-allocated arena would count towards
// the garbage collector's goal (twice the live heap), so a busy edge would hold about
// twice the arena in RSS, and chunks it dropped would go back to the kernel only when the
// runtime's scavenger got to them. A mapped chunk costs only the pages written to, and is
// returned the moment it is dropped.

// mapChunk maps a zeroed chunk; nil when the kernel refuses.
func mapChunk() []byte {
	c, err := unix.Mmap(-1, 0, finChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil
	}
	return c
}

func unmapChunk(c []byte) {
	if c != nil {
		_ = unix.Munmap(c)
	}
}

// release unmaps every chunk (the store is empty and unusable after).
func (f *finStore) release() {
	for _, c := range f.chunks {
		unmapChunk(c)
	}
	unmapChunk(f.spare)
	f.chunks, f.used, f.spare = nil, nil, nil
}

// keyDigest is what a record keeps of a key: its hash under the table's seed (the index's
// key, first) and under a second seed (checked on a hit). 16 bytes in place of a key of
// 40 to 200 (branch, sent-by, method); two different keys share both hashes with a
// probability of about 2^-128.
type keyDigest [16]byte

func (t *txTable) digest(k []byte) (d keyDigest) {
	binary.LittleEndian.PutUint64(d[:8], maphash.Bytes(t.seed, k))
	binary.LittleEndian.PutUint64(d[8:], maphash.Bytes(t.seed2, k))
	return d
}

func (t *txTable) digestString(k string) (d keyDigest) {
	binary.LittleEndian.PutUint64(d[:8], maphash.String(t.seed, k))
	binary.LittleEndian.PutUint64(d[8:], maphash.String(t.seed2, k))
	return d
}

// index is the digest's part the maps are keyed by.
func (d keyDigest) index() uint64 { return binary.LittleEndian.Uint64(d[:8]) }

// digestOf is the stored digest of a record's key field, or false when it has none.
func digestOf(b []byte) (keyDigest, bool) {
	var d keyDigest
	if len(b) != len(d) {
		return d, false
	}
	copy(d[:], b)
	return d, true
}

// finView is a copy of what a finished transaction knows.
type finView struct {
	invite, accepted bool
	src, out         flow
	resp, ack        []byte // copies; nil when none
}

func newFinStore() finStore {
	return finStore{srv: map[uint64]uint64{}, cli: map[uint64]uint64{}}
}

func (f *finStore) pos(seq uint64, off int) uint64 { return seq*finChunk + uint64(off) }

// record returns the bytes of the record at pos, or nil when it is gone.
func (f *finStore) record(pos uint64) []byte {
	seq, off := pos/finChunk, int(pos%finChunk)
	if seq < f.base || seq-f.base >= uint64(len(f.chunks)) {
		return nil
	}
	i := int(seq - f.base)
	if i == 0 && off < f.head || off+finHeader > f.used[i] {
		return nil
	}
	c := f.chunks[i]
	n := finHeader + int(binary.LittleEndian.Uint16(c[off+47:])) + int(binary.LittleEndian.Uint16(c[off+49:])) +
		int(binary.LittleEndian.Uint16(c[off+51:])) + int(binary.LittleEndian.Uint16(c[off+53:]))
	return c[off : off+n]
}

func finFields(r []byte) (skey, ckey, resp, ack []byte) {
	ls := int(binary.LittleEndian.Uint16(r[47:]))
	lc := int(binary.LittleEndian.Uint16(r[49:]))
	lr := int(binary.LittleEndian.Uint16(r[51:]))
	la := int(binary.LittleEndian.Uint16(r[53:]))
	o := finHeader
	skey, o = r[o:o+ls], o+ls
	ckey, o = r[o:o+lc], o+lc
	resp, o = r[o:o+lr], o+lr
	ack = r[o : o+la]
	return
}

// finFlow reads a flow a record stores as route.go's flow.put writes it (invalid: the
// zero flow).
func finFlow(b []byte) flow {
	f, _ := getFlow(b)
	return f
}

func (f *finStore) view(r []byte) finView {
	_, _, resp, ack := finFields(r)
	v := finView{invite: r[8]&finInvite != 0, accepted: r[8]&finAccepted != 0,
		src: finFlow(r[9:28]), out: finFlow(r[28:47])}
	if len(resp) > 0 {
		v.resp = bytes.Clone(resp)
	}
	if len(ack) > 0 {
		v.ack = bytes.Clone(ack)
	}
	return v
}

// put appends the record of p (its lock held) and indexes it.
func (t *txTable) finPut(p *ptx, now time.Time) {
	f := &t.fin
	var skey, ckey []byte
	if p.skey != "" {
		d := t.digestString(p.skey)
		skey = d[:]
	}
	if p.ckey != "" {
		d := t.digestString(p.ckey)
		ckey = d[:]
	}
	need := finHeader + len(skey) + len(ckey) + len(p.resp) + len(p.ack)
	if len(p.resp) > 0xffff || len(p.ack) > 0xffff || need > finChunk {
		return // cannot be kept: retransmissions are not absorbed (never for SIP the parser accepts)
	}
	for (f.n >= maxFinished || f.bytes+need > maxFinishedBytes) && t.finPop() {
	}
	last := len(f.chunks) - 1
	if last < 0 || f.used[last]+need > finChunk {
		c := f.spare
		f.spare = nil
		if c == nil {
			if c = mapChunk(); c == nil {
				return // no memory: this one is not kept
			}
		}
		f.chunks = append(f.chunks, c)
		f.used = append(f.used, 0)
		last++
		if last == 0 {
			f.head = 0
		}
	}
	c, off := f.chunks[last], f.used[last]
	r := c[off : off+need]
	binary.LittleEndian.PutUint64(r[0:], uint64(now.Add(t.linger).UnixNano()))
	var flags byte
	if p.invite {
		flags |= finInvite
	}
	if p.invite && p.sst == srvAccepted {
		flags |= finAccepted
	}
	if p.skey != "" {
		flags |= finHasServer
	}
	r[8] = flags
	clear(r[9:47])
	if p.src.addr.IsValid() {
		p.src.put(r[9:28])
	}
	if p.out.addr.IsValid() {
		p.out.put(r[28:47])
	}
	binary.LittleEndian.PutUint16(r[47:], uint16(len(skey)))
	binary.LittleEndian.PutUint16(r[49:], uint16(len(ckey)))
	binary.LittleEndian.PutUint16(r[51:], uint16(len(p.resp)))
	binary.LittleEndian.PutUint16(r[53:], uint16(len(p.ack)))
	o := finHeader
	o += copy(r[o:], skey)
	o += copy(r[o:], ckey)
	o += copy(r[o:], p.resp)
	copy(r[o:], p.ack)
	f.used[last] += need
	f.n++
	f.bytes += need
	f.touched = true
	pos := f.pos(f.base+uint64(last), off)
	if d, ok := digestOf(skey); ok {
		f.srv[d.index()] = pos
	}
	if d, ok := digestOf(ckey); ok {
		f.cli[d.index()] = pos
	}
}

// finPop drops the oldest record.
func (t *txTable) finPop() bool {
	f := &t.fin
	for len(f.chunks) > 0 && f.head >= f.used[0] {
		t.finDropChunk()
	}
	if len(f.chunks) == 0 {
		return false
	}
	pos := f.pos(f.base, f.head)
	r := f.record(pos)
	skey, ckey, _, _ := finFields(r)
	if d, ok := digestOf(skey); ok && f.srv[d.index()] == pos {
		delete(f.srv, d.index())
	}
	if d, ok := digestOf(ckey); ok && f.cli[d.index()] == pos {
		delete(f.cli, d.index())
	}
	f.head += len(r)
	f.n--
	f.bytes -= len(r)
	if f.head >= f.used[0] {
		t.finDropChunk()
	}
	return true
}

func (t *txTable) finDropChunk() {
	f := &t.fin
	if f.spare == nil {
		f.spare = f.chunks[0]
	} else {
		unmapChunk(f.chunks[0])
	}
	f.chunks[0] = nil
	f.chunks = f.chunks[1:]
	f.used = f.used[1:]
	f.base++
	f.head = 0
	if len(f.chunks) == 0 {
		f.chunks, f.used = nil, nil
	}
}

// finOldestExpired reports whether the oldest record's linger ended by ns.
func (t *txTable) finOldestExpired(ns int64) bool {
	f := &t.fin
	for len(f.chunks) > 0 && f.head >= f.used[0] {
		t.finDropChunk()
	}
	if len(f.chunks) == 0 {
		return false
	}
	r := f.chunks[0][f.head:]
	return int64(binary.LittleEndian.Uint64(r)) <= ns
}

// finFind looks key up in one of the finished records' indexes (f.srv with the server
// key, f.cli with our branch), checking the hit against the record's own digest of that
// key (t.finMu held).
func (t *txTable) finFind(index map[uint64]uint64, key []byte, server bool) (finView, bool) {
	f := &t.fin
	d := t.digest(key)
	pos, ok := index[d.index()]
	if !ok {
		return finView{}, false
	}
	r := f.record(pos)
	if r == nil {
		return finView{}, false
	}
	stored, _, _, _ := finFields(r)
	if !server {
		_, stored, _, _ = finFields(r)
	}
	if !bytes.Equal(stored, d[:]) {
		return finView{}, false
	}
	return f.view(r), true
}

// finServerLocked looks a server key up among finished transactions (t.finMu held).
func (t *txTable) finServerLocked(k []byte) (finView, bool) {
	return t.finFind(t.fin.srv, k, true)
}

// finServer looks a server key up among finished transactions.
func (t *txTable) finServer(k []byte) (finView, bool) {
	t.finMu.Lock()
	defer t.finMu.Unlock()
	return t.finServerLocked(k)
}

// finClient looks our branch up among finished transactions.
func (t *txTable) finClient(branch []byte) (finView, bool) {
	t.finMu.Lock()
	defer t.finMu.Unlock()
	return t.finFind(t.fin.cli, branch, false)
}
