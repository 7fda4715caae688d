package zulip

import (
	"net"
	"syscall"
)

// connProbe peeks at a pooled connection without blocking: a server that
// closed it (idle timeout, restart) shows as end of file, so the request
// goes out on a fresh connection instead of failing half-way. Any data
// waiting is unexpected on an idle connection, and also makes it unfit.
// It is made once per connection so that a check allocates nothing.
type connProbe struct {
	rc   syscall.RawConn
	peek func(fd uintptr) bool
	buf  [1]byte
	n    int
	err  error
}

func newConnProbe(c net.Conn) *connProbe {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &connProbe{rc: rc}
	p.peek = p.recv
	return p
}

func (p *connProbe) recv(fd uintptr) bool {
	p.n, _, p.err = syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true // never wait: an empty socket is the good case
}

// alive says whether the connection is open with nothing waiting.
func (p *connProbe) alive() bool {
	if p == nil {
		return true
	}
	if err := p.rc.Read(p.peek); err != nil {
		return false
	}
	return p.n < 0 && (p.err == syscall.EAGAIN || p.err == syscall.EWOULDBLOCK)
}
