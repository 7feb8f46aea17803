package controlplane

import (
	"net"
	"sync"
)

// multiListener accepts on several listeners as one, so the apiserver's one SecureServing
// listener serves both the bridge address (for pods and the `kubernetes` Endpoints) and
// loopback (for the host), without binding every interface of the machine.
type multiListener struct {
	ls    []net.Listener
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
}

func listenAll(addrs ...string) (*multiListener, error) {
	m := &multiListener{conns: make(chan net.Conn), errs: make(chan error, len(addrs)), done: make(chan struct{})}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			m.Close()
			return nil, err
		}
		m.ls = append(m.ls, l)
	}
	for _, l := range m.ls {
		go m.accept(l)
	}
	return m, nil
}

func (m *multiListener) accept(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-m.done:
			case m.errs <- err:
			}
			return
		}
		select {
		case m.conns <- c:
		case <-m.done:
			c.Close()
			return
		}
	}
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		return nil, err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	m.once.Do(func() { close(m.done) })
	var first error
	for _, l := range m.ls {
		if err := l.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Addr is the first address (the advertised one): the apiserver derives its bind address from it.
func (m *multiListener) Addr() net.Addr { return m.ls[0].Addr() }
