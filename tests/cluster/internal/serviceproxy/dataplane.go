package serviceproxy

import (
	"context"
	"io"
	"log"
	"net"
	"net/netip"
	"sync"
	"time"
)

// wantFrontend is what a sync asks of one ClusterIP:port or LoadBalancerIP:port.
type wantFrontend struct {
	service   string
	endpoints []string
	lag       time.Duration
}

// backend is one endpoint of a frontend; removeAt is set while its removal lags.
type backend struct {
	addr     string
	removeAt time.Time
}

// frontend is a listener and its endpoints. The listener exists only while it has endpoints.
type frontend struct {
	addr    netip.AddrPort
	service string
	lag     time.Duration
	ln      net.Listener

	mu       sync.Mutex
	backends []*backend
	next     int
}

// dataplane holds the frontends and every proxied connection.
type dataplane struct {
	ctx       context.Context
	frontends map[netip.AddrPort]*frontend
	wg        sync.WaitGroup
}

func newDataplane(ctx context.Context) *dataplane {
	return &dataplane{ctx: ctx, frontends: map[netip.AddrPort]*frontend{}}
}

// apply makes the frontends match want at time now. An endpoint that leaves stays until its
// frontend's lag has passed; the returned time is the next such expiry. inUse names the
// addresses that still have a listener.
func (d *dataplane) apply(want map[netip.AddrPort]wantFrontend, now time.Time) (next time.Time, inUse map[netip.Addr]bool) {
	for k := range want {
		if d.frontends[k] == nil {
			d.frontends[k] = &frontend{addr: k}
		}
	}
	inUse = map[netip.Addr]bool{}
	for k, f := range d.frontends {
		w, ok := want[k]
		if ok {
			f.service, f.lag = w.service, w.lag
		}
		f.mu.Lock()
		keep := f.backends[:0:0]
		wanted := map[string]bool{}
		for _, e := range w.endpoints {
			wanted[e] = true
		}
		for _, b := range f.backends {
			switch {
			case wanted[b.addr]:
				b.removeAt = time.Time{}
				delete(wanted, b.addr)
				keep = append(keep, b)
			case b.removeAt.IsZero() && f.lag > 0:
				b.removeAt = now.Add(f.lag)
				keep = append(keep, b)
			case !b.removeAt.IsZero() && now.Before(b.removeAt):
				keep = append(keep, b)
			}
		}
		for _, e := range w.endpoints {
			if wanted[e] {
				keep = append(keep, &backend{addr: e})
				delete(wanted, e)
			}
		}
		f.backends = keep
		for _, b := range keep {
			next = earliest(next, b.removeAt)
		}
		f.mu.Unlock()

		switch {
		case len(keep) > 0 && f.ln == nil:
			ln, err := net.Listen("tcp", k.String())
			if err != nil {
				log.Printf("serviceproxy: %s: listening on %s: %v", f.service, k, err)
				next = earliest(next, now.Add(time.Second))
				break
			}
			f.ln = ln
			d.wg.Go(func() { d.serve(f, ln) })
		case len(keep) == 0:
			// No usable endpoint: no listener, the connection is refused (kube-proxy REJECT).
			if f.ln != nil {
				f.ln.Close()
			}
			delete(d.frontends, k)
			continue
		}
		inUse[k.Addr()] = true
	}
	return next, inUse
}

// pick returns the next endpoint, round-robin.
func (f *frontend) pick() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.backends) == 0 {
		return ""
	}
	f.next = (f.next + 1) % len(f.backends)
	return f.backends[f.next].addr
}

func (d *dataplane) serve(f *frontend, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed
		}
		be := f.pick()
		if be == "" {
			c.Close()
			continue
		}
		d.wg.Go(func() { d.proxy(c.(*net.TCPConn), be) })
	}
}

// proxy copies both ways with half-close. It is not cut when the endpoint leaves the frontend
// (as a conntrack entry outlives the rule), only when either side closes or the context ends.
func (d *dataplane) proxy(c *net.TCPConn, be string) {
	defer c.Close()
	dctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	up, err := (&net.Dialer{}).DialContext(dctx, "tcp", be)
	cancel()
	if err != nil {
		log.Printf("serviceproxy: %s: connecting to endpoint %s: %v", c.LocalAddr(), be, err)
		c.SetLinger(0) // reset, as a packet to a dead endpoint would end
		return
	}
	u := up.(*net.TCPConn)
	defer u.Close()
	stop := context.AfterFunc(d.ctx, func() { c.Close(); u.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		io.Copy(u, c)
		u.CloseWrite()
		close(done)
	}()
	io.Copy(c, u)
	c.CloseWrite()
	<-done
}

// closeAll closes every listener and waits for the connections, which end with d.ctx.
func (d *dataplane) closeAll() {
	for k, f := range d.frontends {
		if f.ln != nil {
			f.ln.Close()
		}
		delete(d.frontends, k)
	}
	d.wg.Wait()
}
