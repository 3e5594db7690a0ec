package sip

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// Writing to the wire: every message the edge sends is serialized once, into a pooled
// buffer, and written on the right socket: over UDP the listener's own socket (so the
// source port is the edge's, and no connection pool is asked), over TCP the connection
// sipgo pooled for the peer (the one a request came on, or one the edge opened).

var bufPool = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 2048)) }}

// maxPooledBuf keeps buffers that grew for a huge message out of the pool.
const maxPooledBuf = 16 << 10

// encode serializes m into a pooled buffer; give it back with release.
func encode(m sipmsg.Message) *bytes.Buffer {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	m.StringWrite(b)
	return b
}

func release(b *bytes.Buffer) {
	if b != nil && b.Cap() <= maxPooledBuf {
		bufPool.Put(b)
	}
}

var (
	errNoConnection = errors.New("sip: no connection to the peer")
	errNoSocket     = errors.New("sip: not listening")
)

// tcpWriter is what sipgo's *sip.TCPConnection offers besides WriteMsg: a write of
// ready bytes, under its write deadline.
type tcpWriter interface {
	Write(b []byte) (int, error)
}

// writeTo sends b to f without opening a connection: responses go back on the
// connection their request came on, or nowhere.
func (s *Server) writeTo(f flow, b []byte) error {
	if f.tp == "UDP" {
		if s.udp == nil {
			return errNoSocket
		}
		_, err := s.udp.WriteToUDPAddrPort(b, f.addr)
		return err
	}
	c, _ := s.tp.GetConnection("tcp", f.addr.String())
	if c == nil {
		return errNoConnection
	}
	if tc, ok := c.(*sipmsg.TCPConnection); ok {
		return s.writeTCP(tc, b)
	}
	w, ok := c.(tcpWriter)
	if !ok {
		return errNoConnection
	}
	_, err := w.Write(b)
	return err
}

// tcpSendTimeout bounds one TCP write from a goroutine other connections depend on (a
// UDP reader, the timer wheel): a peer that stopped reading until the kernel's send
// buffer is full must not stall everyone else's messages.
const tcpSendTimeout = time.Second

// writeTCP writes b on tc within tcpSendTimeout (or TCPWriteTimeout, when shorter). A
// write that fails or times out may have left part of a message on the stream, so the
// connection is closed.
func (s *Server) writeTCP(tc *sipmsg.TCPConnection, b []byte) error {
	d := min(tcpSendTimeout, s.cfg.TCPWriteTimeout)
	if err := tc.Conn.SetWriteDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	if _, err := tc.Conn.Write(b); err != nil {
		_ = tc.Close()
		return err
	}
	return nil
}

// sendRequest sends the serialized request b to f, opening a TCP connection when there
// is none (under the dial guard's permission, in its own goroutine: a connect must not
// stall the reader that called). onErr, when not nil, learns of a failure that happens
// after sendRequest returned. It returns a failure it sees at once.
func (s *Server) sendRequest(f flow, b []byte, onErr func(error)) error {
	err := s.writeTo(f, b)
	if !errors.Is(err, errNoConnection) {
		return err
	}
	cp := append([]byte(nil), b...)
	s.active.Add(1)
	go func() {
		defer s.active.Add(-1)
		if err := s.dialAndWrite(f, cp); err != nil {
			s.log.Debug().Err(err).Str("next_hop", f.addr.String()).Msg("TCP send failed")
			if onErr != nil {
				onErr(err)
			}
		}
	}()
	return nil
}

// dialAndWrite opens (or finds, when another send opened it meanwhile) a TCP connection
// to f through sipgo's transport layer, which pools it and reads responses from it.
func (s *Server) dialAndWrite(f flow, b []byte) error {
	ctx, cancel := context.WithTimeout(s.dialCtx, s.cfg.UpstreamConnectTimeout)
	defer cancel()
	stub := sipmsg.NewRequest(sipmsg.OPTIONS, sipmsg.Uri{Scheme: "sip", Host: f.addr.Addr().String(), Port: int(f.addr.Port())})
	stub.AppendHeader(&sipmsg.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "TCP",
		Host: s.adv.host, Port: s.adv.port, Params: sipmsg.NewParams()})
	stub.SetTransport("TCP")
	stub.SetDestination(f.addr.String())
	c, err := s.tp.ClientRequestConnection(ctx, stub)
	if err != nil {
		return err
	}
	defer c.TryClose() // the reference ClientRequestConnection handed us; the pool keeps the connection
	w, ok := c.(tcpWriter)
	if !ok {
		return errNoConnection
	}
	_, err = w.Write(b)
	return err
}

// sendStateless serializes r and sends it to its destination outside any transaction
// (ACK for a 2xx, the ACK of an abandoned 2xx).
func (s *Server) sendStateless(r *sipmsg.Request) error {
	f, err := flowOf(r)
	if err != nil {
		return err
	}
	b := encode(r)
	defer release(b)
	return s.sendRequest(f, b.Bytes(), nil)
}

// flowOf is where a request built by buildForward goes.
func flowOf(r *sipmsg.Request) (flow, error) {
	ap, err := netip.ParseAddrPort(r.Destination())
	if err != nil {
		return flow{}, err
	}
	tp := "UDP"
	if r.Transport() == "TCP" {
		tp = "TCP"
	}
	return flow{tp: tp, addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// responseSource is the socket peer a response came from.
func responseSource(res *sipmsg.Response) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(res.MessageData.Source())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
