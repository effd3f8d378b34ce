package simnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringvpn/ringvpn/overlay"
)

func TestFabric_DialAcceptExchange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt = 40 * time.Millisecond
		f := newFabric(t, Config{Latency: Constant(rtt)})
		a, b := listen(t, f, 1), listen(t, f, 2)

		start := time.Now()
		la, lb := connect(t, a, b)
		if got := time.Since(start); got != rtt {
			t.Errorf("Dial took %v, want one RTT, %v", got, rtt)
		}
		for _, c := range []struct {
			name      string
			got, want any
		}{
			{"dialer Dialed", la.Dialed(), true},
			{"acceptor Dialed", lb.Dialed(), false},
			{"dialer Peer", la.Peer(), b.Self()},
			{"acceptor Peer", lb.Peer(), a.Self()},
			{"dialer Remote", la.Remote(), b.LocalAddr()},
			{"acceptor Remote", lb.Remote(), a.LocalAddr()},
			{"dialer RTT", la.RTT(), rtt},
			{"acceptor RTT", lb.RTT(), rtt},
		} {
			if c.got != c.want {
				t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
			}
		}

		type arrival struct {
			at  time.Duration
			pkt string
		}
		atA, atB := make(chan arrival, 1), make(chan arrival, 1)
		lb.SetHandler(func(pkt []byte) {
			atB <- arrival{time.Since(start), string(pkt)}
			pkt[0] = 'P' // the handler owns pkt during the call
			if err := lb.Send(pkt); err != nil {
				t.Errorf("Send from handler: %v", err)
			}
		})
		la.SetHandler(func(pkt []byte) { atA <- arrival{time.Since(start), string(pkt)} })

		sent := time.Since(start)
		pkt := []byte("ping")
		mustSend(t, la, pkt)
		copy(pkt, "XXXX") // Send copied it
		if got, want := <-atB, (arrival{sent + rtt/2, "ping"}); got != want {
			t.Errorf("b got %+v, want %+v", got, want)
		}
		if got, want := <-atA, (arrival{sent + rtt, "Ping"}); got != want {
			t.Errorf("a got %+v, want %+v", got, want)
		}
		synctest.Wait()
		want := Stats{Sent: 2, Delivered: 2, Dials: 1, Links: 1, Nodes: 2}
		if got := f.Stats(); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}
	})
}

func TestLinker_DialNoAnswer(t *testing.T) {
	const rtt = 400 * time.Millisecond
	for _, tc := range []struct {
		name    string
		cfg     Config
		timeout time.Duration // of the dial's context; 0: none
		target  func(t *testing.T, f *Fabric) netip.AddrPort
		want    time.Duration
		wantCtx error
	}{{
		name:   "nobody listens",
		target: func(*testing.T, *Fabric) netip.AddrPort { return hostAddr(99) },
		want:   3 * time.Second,
	}, {
		name: "crashed node",
		target: func(t *testing.T, f *Fabric) netip.AddrPort {
			c := listen(t, f, 3)
			c.Kill()
			return c.LocalAddr()
		},
		want: 3 * time.Second,
	}, {
		name: "closed node",
		target: func(t *testing.T, f *Fabric) netip.AddrPort {
			c := listen(t, f, 3)
			c.Close()
			return c.LocalAddr()
		},
		want: 3 * time.Second,
	}, {
		name: "node crashes during the handshake",
		target: func(t *testing.T, f *Fabric) netip.AddrPort {
			c := listen(t, f, 3)
			time.AfterFunc(rtt/4, c.Kill)
			return c.LocalAddr()
		},
		want: 3 * time.Second,
	}, {
		name:    "context deadline first",
		timeout: time.Second,
		target:  func(*testing.T, *Fabric) netip.AddrPort { return hostAddr(99) },
		want:    time.Second,
		wantCtx: context.DeadlineExceeded,
	}, {
		name:   "configured timeout",
		cfg:    Config{DialTimeout: 500 * time.Millisecond},
		target: func(*testing.T, *Fabric) netip.AddrPort { return hostAddr(99) },
		want:   500 * time.Millisecond,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := tc.cfg
				cfg.Latency = Constant(rtt)
				f := newFabric(t, cfg)
				a := listen(t, f, 1)
				remote := tc.target(t, f)
				ctx := context.Background()
				if tc.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.timeout)
					defer cancel()
				}
				start := time.Now()
				l, err := a.Dial(ctx, remote)
				if got := time.Since(start); got != tc.want {
					t.Errorf("Dial failed after %v, want %v", got, tc.want)
				}
				if l != nil || !errors.Is(err, ErrNoAnswer) {
					t.Fatalf("Dial = %v, %v; want an error wrapping ErrNoAnswer", l, err)
				}
				if want := "no node answered at that address"; !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), remote.String()) {
					t.Errorf("error %q does not say %q and name %v", err, want, remote)
				}
				if tc.wantCtx != nil && !errors.Is(err, tc.wantCtx) {
					t.Errorf("error %q does not wrap %v", err, tc.wantCtx)
				}
				if s := f.Stats(); s.Dials != 1 || s.DialsFailed != 1 || s.Links != 0 {
					t.Errorf("Stats = %+v, want one dial, failed, no links", s)
				}
			})
		})
	}
}

func TestLinker_DialErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFabric(t, Config{Latency: Constant(100 * time.Millisecond)})
		a, b := listen(t, f, 1), listen(t, f, 2)

		if _, err := a.Dial(context.Background(), a.LocalAddr()); !errors.Is(err, ErrSelfDial) {
			t.Errorf("Dial(self) = %v, want ErrSelfDial", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := a.Dial(ctx, b.LocalAddr()); !errors.Is(err, context.Canceled) {
			t.Errorf("Dial(cancelled) = %v, want context.Canceled", err)
		}

		// Cancelled during the handshake: no link at either side.
		ctx, cancel = context.WithCancel(context.Background())
		time.AfterFunc(30*time.Millisecond, cancel)
		start := time.Now()
		if _, err := a.Dial(ctx, b.LocalAddr()); !errors.Is(err, context.Canceled) || errors.Is(err, ErrNoAnswer) {
			t.Errorf("Dial cancelled midway = %v, want context.Canceled only", err)
		}
		if got := time.Since(start); got != 30*time.Millisecond {
			t.Errorf("cancelled Dial returned after %v, want 30ms", got)
		}
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		defer acancel()
		if l, err := b.Accept(actx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Accept after a cancelled dial = %v, %v; want no link", l, err)
		}

		// The dialer crashes during the handshake.
		time.AfterFunc(30*time.Millisecond, a.Kill)
		if _, err := a.Dial(context.Background(), b.LocalAddr()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Dial by a node crashing midway = %v, want net.ErrClosed", err)
		}
		if _, err := a.Dial(context.Background(), b.LocalAddr()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Dial by a crashed node = %v, want net.ErrClosed", err)
		}
		if _, err := a.Accept(context.Background()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept by a crashed node = %v, want net.ErrClosed", err)
		}
		synctest.Wait()
		if s := f.Stats(); s.Dials != 2 || s.DialsFailed != 2 || s.Links != 0 {
			t.Errorf("Stats = %+v, want 2 dials, both failed, no links", s)
		}
	})
}

func TestLinker_KillEndsPeersAfterDeadAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt, deadAfter = 40 * time.Millisecond, 5 * time.Second
		f := newFabric(t, Config{Latency: Constant(rtt), DeadAfter: deadAfter})
		a, b := listen(t, f, 1), listen(t, f, 2)
		la, lb := connect(t, a, b)
		var atA, atB atomic.Int32
		la.SetHandler(func([]byte) { atA.Add(1) })
		lb.SetHandler(func([]byte) { atB.Add(1) })

		mustSend(t, la, []byte("already on the wire"))
		t0 := time.Now()
		a.Kill()
		if !isDone(la.Done()) {
			t.Error("the crashed node's end is not done")
		}
		if err := la.Send([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Send on the crashed node's end = %v, want net.ErrClosed", err)
		}
		time.Sleep(time.Second)
		if err := lb.Send([]byte("into the void")); err != nil {
			t.Errorf("Send to a crashed peer = %v, want nil until DeadAfter", err)
		}
		time.Sleep(deadAfter - time.Second - time.Nanosecond)
		if isDone(lb.Done()) {
			t.Fatal("the peer's end ended before DeadAfter")
		}
		<-lb.Done()
		if got := time.Since(t0); got != deadAfter {
			t.Errorf("the peer's end ended %v after the crash, want %v", got, deadAfter)
		}
		if err := lb.Send([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Send after the end = %v, want net.ErrClosed", err)
		}
		synctest.Wait()
		if got := atB.Load(); got != 1 {
			t.Errorf("b got %d packets, want the one sent before the crash", got)
		}
		if got := atA.Load(); got != 0 {
			t.Errorf("the crashed node got %d packets", got)
		}
		want := Stats{Sent: 2, Delivered: 1, Dropped: 1, Dials: 1, Nodes: 1}
		if got := f.Stats(); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}

		// The address is free: the node restarts.
		if err := a.Close(); err != nil {
			t.Errorf("Close after Kill = %v, want nil", err)
		}
		a2, err := f.Listen(member("node1-again"), a.LocalAddr())
		if err != nil {
			t.Fatalf("Listen at a crashed node's address: %v", err)
		}
		connect(t, b, a2)
	})
}

func TestLinker_CloseEndsPeersAfterOneWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt = 40 * time.Millisecond
		f := newFabric(t, Config{Latency: Constant(rtt)})
		a, b, c := listen(t, f, 1), listen(t, f, 2), listen(t, f, 3)
		lab, lba := connect(t, a, b)
		lca, lac := connect(t, c, a)
		var got []string
		var mu sync.Mutex
		lba.SetHandler(func(pkt []byte) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%s at %v, done=%v", pkt, time.Since(time.Time{}), isDone(lba.Done())))
		})
		for i := range 3 {
			mustSend(t, lab, fmt.Appendf(nil, "p%d", i))
		}
		t0 := time.Now()
		if err := a.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if !isDone(lab.Done()) || !isDone(lac.Done()) {
			t.Error("the closing node's ends are not done")
		}
		if _, err := a.Accept(context.Background()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
		}
		for _, l := range []*Link{lba, lca} {
			<-l.Done()
			if got := time.Since(t0); got != rtt/2 {
				t.Errorf("the peer's end ended %v after Close, want %v", got, rtt/2)
			}
		}
		synctest.Wait()
		at := time.Since(time.Time{}) // arrival time: now
		want := []string{
			fmt.Sprintf("p0 at %v, done=false", at),
			fmt.Sprintf("p1 at %v, done=false", at),
			fmt.Sprintf("p2 at %v, done=false", at),
		}
		mu.Lock()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("b got %q, want %q: packets sent before Close arrive before the end", got, want)
		}
		mu.Unlock()
		if s := f.Stats(); s.Links != 0 || s.Nodes != 2 {
			t.Errorf("Stats = %+v, want no links, 2 nodes", s)
		}
		if err := a.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		if _, err := f.Listen(member("another"), a.LocalAddr()); err != nil {
			t.Errorf("Listen at a closed node's address: %v", err)
		}
	})
}

func TestLink_Close(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt = 40 * time.Millisecond
		f := newFabric(t, Config{Latency: Constant(rtt)})
		a, b := listen(t, f, 1), listen(t, f, 2)
		la, lb := connect(t, a, b)
		var atA atomic.Int32
		la.SetHandler(func([]byte) { atA.Add(1) })
		lb.SetHandler(func([]byte) {})

		t0 := time.Now()
		if err := la.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if !isDone(la.Done()) {
			t.Error("closed end is not done")
		}
		if err := la.Send([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Send on a closed end = %v, want net.ErrClosed", err)
		}
		if err := lb.Send([]byte("crossing the close")); err != nil {
			t.Errorf("Send before the close reached this end = %v, want nil", err)
		}
		<-lb.Done()
		if got := time.Since(t0); got != rtt/2 {
			t.Errorf("other end ended %v after Close, want %v", got, rtt/2)
		}
		if err := lb.Send([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Send on the ended other end = %v, want net.ErrClosed", err)
		}
		if err := la.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		synctest.Wait()
		if got := atA.Load(); got != 0 {
			t.Errorf("closed end got %d packets", got)
		}
		want := Stats{Sent: 1, Dropped: 1, Dials: 1, Nodes: 2}
		if got := f.Stats(); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}

		// Both ends closing at once.
		la, lb = connect(t, a, b)
		la.Close()
		lb.Close()
		time.Sleep(rtt)
		if s := f.Stats(); s.Links != 0 {
			t.Errorf("Stats.Links = %d after both ends closed, want 0", s.Links)
		}
	})
}

func TestLink_Unhandled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFabric(t, Config{})
		la, lb := connect(t, listen(t, f, 1), listen(t, f, 2))
		mustSend(t, la, []byte("too early"))
		time.Sleep(time.Second)
		lb.SetHandler(func([]byte) {})
		mustSend(t, la, []byte("handled"))
		time.Sleep(time.Second)
		lb.SetHandler(nil)
		mustSend(t, la, []byte("no longer handled"))
		time.Sleep(time.Second)
		if s := f.Stats(); s.Sent != 3 || s.Unhandled != 2 || s.Delivered != 1 {
			t.Errorf("Stats = %+v, want 3 sent, 2 unhandled, 1 delivered", s)
		}
		if err := la.Send(make([]byte, MaxPacket+1)); !errors.Is(err, ErrTooBig) {
			t.Errorf("Send(MaxPacket+1 bytes) = %v, want ErrTooBig", err)
		}
		mustSend(t, la, make([]byte, MaxPacket))
	})
}

func TestFabric_Loss(t *testing.T) {
	const count, loss = 20000, 0.2
	run := func(t *testing.T, seed uint64) Stats {
		var s Stats
		synctest.Test(t, func(t *testing.T) {
			f := newFabric(t, Config{Loss: loss, Seed: seed})
			la, lb := connect(t, listen(t, f, 1), listen(t, f, 2))
			lb.SetHandler(func([]byte) {})
			la.SetHandler(func([]byte) {})
			for i := range count {
				mustSend(t, la, seqPacket(1, i))
				mustSend(t, lb, seqPacket(2, i))
			}
			time.Sleep(time.Second)
			s = f.Stats()
		})
		return s
	}
	s := run(t, 1)
	if s.Sent != 2*count || s.Delivered+s.Lost != s.Sent || s.InFlight != 0 {
		t.Errorf("Stats = %+v, want %d sent, each delivered or lost", s, 2*count)
	}
	if got := float64(s.Lost) / float64(s.Sent); got < loss-0.02 || got > loss+0.02 {
		t.Errorf("lost %.3f of the packets, want about %v", got, loss)
	}
	if again := run(t, 1); again != s {
		t.Errorf("same seed, same sends: Stats = %+v, then %+v", s, again)
	}
	if other := run(t, 2); other.Lost == s.Lost {
		t.Errorf("seeds 1 and 2 lost the same number of packets, %d", s.Lost)
	}
}

// testOrdering has senders send numbered packets to one receiver, some
// links dialled each way, and checks that each link's packets arrive in
// order, that the receiver's handlers never overlap, and that nothing is
// lost.
func testOrdering(t *testing.T, cfg Config, senders, perSender int, pause func(*rand.Rand)) {
	f := newFabric(t, cfg)
	rx := listen(t, f, 0)
	var inHandler atomic.Bool
	var mu sync.Mutex // guards next; uncontended when handlers don't overlap
	next := make(map[int]int)
	var got atomic.Int64
	all := make(chan struct{})
	handler := func(pkt []byte) {
		if !inHandler.CompareAndSwap(false, true) {
			t.Error("two handlers of one node ran at once")
		}
		src, seq := parseSeqPacket(pkt)
		mu.Lock()
		if seq != next[src] {
			t.Errorf("from sender %d: got packet %d, want %d", src, seq, next[src])
		}
		next[src] = seq + 1
		mu.Unlock()
		inHandler.Store(false)
		if got.Add(1) == int64(senders*perSender) {
			close(all)
		}
	}

	links := make([]*Link, senders)
	var wg sync.WaitGroup
	for i := range senders {
		s := listen(t, f, i+1)
		wg.Go(func() {
			if i%3 == 0 {
				lrx, ls := connect(t, rx, s)
				lrx.SetHandler(handler)
				links[i] = ls
			} else {
				ls, lrx := connect(t, s, rx)
				lrx.SetHandler(handler)
				links[i] = ls
			}
		})
	}
	wg.Wait() // every handler is in place before the first packet
	for i, l := range links {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 0))
			for seq := range perSender {
				mustSend(t, l, seqPacket(i, seq))
				pause(rng)
			}
		})
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(time.Minute):
		t.Fatalf("got %d packets of %d; Stats %+v", got.Load(), senders*perSender, f.Stats())
	}
}

func TestFabric_OrderPerDestination(t *testing.T) {
	t.Run("synctest", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			testOrdering(t, Config{Latency: NewPlane(7), Workers: 4}, 16, 300, func(rng *rand.Rand) {
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
				}
			})
		})
	})
	t.Run("real time", func(t *testing.T) {
		testOrdering(t, Config{Latency: Constant(2 * time.Millisecond), Workers: 4}, 16, 300, func(rng *rand.Rand) {
			if rng.IntN(50) == 0 {
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
			}
		})
	})
	t.Run("no latency", func(t *testing.T) {
		testOrdering(t, Config{Latency: Constant(0), Workers: 2}, 8, 1000, func(*rand.Rand) {})
	})
}

// TestFabric_HandlerReentry has handlers send, dial, close their own link
// and crash their node.
func TestFabric_HandlerReentry(t *testing.T) {
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const rtt, rounds = 40 * time.Millisecond, 100
				f := newFabric(t, Config{Latency: Constant(rtt), Workers: workers})
				a, b, c := listen(t, f, 1), listen(t, f, 2), listen(t, f, 3)
				lab, lba := connect(t, a, b)
				go func() {
					for {
						l, err := c.Accept(context.Background())
						if err != nil {
							return
						}
						// c crashes on its first packet.
						l.SetHandler(func([]byte) { c.Kill() })
					}
				}()
				lba.SetHandler(func(pkt []byte) {
					if err := lba.Send(pkt); err != nil {
						t.Errorf("echo: %v", err)
					}
				})
				var n int
				start := time.Now()
				finished := make(chan time.Duration, 1)
				lab.SetHandler(func(pkt []byte) {
					n++
					switch n {
					case rounds / 2:
						lc, err := a.Dial(context.Background(), c.LocalAddr())
						if err != nil {
							t.Errorf("Dial from a handler: %v", err)
							return
						}
						if err := lc.Send([]byte("die")); err != nil {
							t.Errorf("Send on a link dialled from a handler: %v", err)
						}
					case rounds:
						lab.Close()
						finished <- time.Since(start)
						return
					}
					if err := lab.Send(pkt); err != nil {
						t.Errorf("ping: %v", err)
					}
				})
				mustSend(t, lab, []byte("ping"))
				// rounds round trips and the dial's.
				if got, want := <-finished, (rounds+1)*rtt; got != want {
					t.Errorf("finished after %v, want %v", got, want)
				}
				<-lba.Done()
				time.Sleep(rtt)
				if s := f.Stats(); s.Nodes != 2 || s.Links != 1 || s.Delivered != 2*rounds+1 {
					t.Errorf("Stats = %+v; want c crashed, one link left (to c, until DeadAfter), %d delivered", s, 2*rounds+1)
				}
			})
		})
	}
}

func TestFabric_Listen(t *testing.T) {
	f := newFabric(t, Config{})
	first := listen(t, f, 1)
	for _, tc := range []struct {
		name string
		addr netip.AddrPort
		want error
	}{
		{"taken", hostAddr(1), ErrAddrInUse},
		{"taken, IPv4-mapped", netip.AddrPortFrom(netip.AddrFrom16(hostAddr(1).Addr().As16()), 4242), ErrAddrInUse},
		{"unspecified", netip.MustParseAddrPort("0.0.0.0:4242"), nil},
		{"no port", netip.MustParseAddrPort("10.0.0.9:0"), nil},
		{"invalid", netip.AddrPort{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := f.Listen(member("x"), tc.addr)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("Listen(%v) = %v, %v; want an error wrapping %v", tc.addr, l, err, tc.want)
			}
		})
	}
	if _, err := f.Listen(nil, hostAddr(2)); err == nil {
		t.Error("Listen(nil member) succeeded")
	}
	if got := first.LocalAddr(); got != hostAddr(1) {
		t.Errorf("LocalAddr = %v, want %v", got, hostAddr(1))
	}
}

func TestFabric_CloseEndsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := New(Config{})
		a, b := listen(t, f, 1), listen(t, f, 2)
		la, lb := connect(t, a, b)
		lb.SetHandler(func([]byte) {})
		mustSend(t, la, []byte("in flight"))

		errs := make(chan error, 3)
		go func() {
			_, err := a.Dial(context.Background(), hostAddr(99))
			errs <- err
		}()
		go func() {
			_, err := a.Dial(context.Background(), b.LocalAddr())
			errs <- err
		}()
		go func() {
			_, err := b.Accept(context.Background())
			errs <- err
		}()
		synctest.Wait()
		start := time.Now()
		if err := f.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for range 3 {
			if err := <-errs; !errors.Is(err, net.ErrClosed) {
				t.Errorf("pending Dial or Accept = %v, want net.ErrClosed", err)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("pending calls returned %v after Close, want at once", d)
		}
		if !isDone(la.Done()) || !isDone(lb.Done()) {
			t.Error("links are not done after Close")
		}
		if err := la.Send([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Send after Close = %v, want net.ErrClosed", err)
		}
		if _, err := f.Listen(member("late"), hostAddr(3)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Listen after Close = %v, want net.ErrClosed", err)
		}
		if err := f.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
		s := f.Stats()
		if want := (Stats{Sent: 1, Dropped: 1, Dials: 3, DialsFailed: 2}); s != want {
			t.Errorf("Stats = %+v, want %+v", s, want)
		}
	})
}

func TestFabric_RealTime(t *testing.T) {
	f := newFabric(t, Config{Latency: Constant(10 * time.Millisecond)})
	a, b := listen(t, f, 1), listen(t, f, 2)
	start := time.Now()
	la, lb := connect(t, a, b)
	if d := time.Since(start); d < 10*time.Millisecond {
		t.Errorf("Dial took %v, want at least the RTT", d)
	}
	got := make(chan time.Time, 1)
	lb.SetHandler(func([]byte) { got <- time.Now() })
	sent := time.Now()
	mustSend(t, la, []byte("x"))
	select {
	case at := <-got:
		if d := at.Sub(sent); d < 5*time.Millisecond {
			t.Errorf("packet arrived after %v, want at least 5ms", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("packet did not arrive")
	}
}

func TestFabric_ThousandNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("slow in -short mode")
	}
	synctest.Test(t, func(t *testing.T) {
		const nodes, dials, rounds = 1000, 8, 10
		f := newFabric(t, Config{Latency: NewPlane(1), Seed: 1})
		ls := make([]*Linker, nodes)
		for i := range ls {
			ls[i] = listen(t, f, i)
		}
		var echoed atomic.Int64
		var wg sync.WaitGroup
		for _, l := range ls {
			wg.Go(func() {
				for {
					k, err := l.Accept(context.Background())
					if err != nil {
						return
					}
					k.SetHandler(func(pkt []byte) {
						echoed.Add(1)
						k.Send(pkt)
					})
				}
			})
		}
		rng := rand.New(rand.NewPCG(1, 2))
		var sent, answered atomic.Int64
		for i, l := range ls {
			peers := rng.Perm(nodes)[:dials+1]
			wg.Go(func() {
				var mine []overlay.Link
				for _, p := range peers {
					if p == i || len(mine) == dials {
						continue
					}
					k, err := l.Dial(context.Background(), ls[p].LocalAddr())
					if err != nil {
						t.Errorf("Dial: %v", err)
						return
					}
					k.SetHandler(func([]byte) { answered.Add(1) })
					mine = append(mine, k)
				}
				time.Sleep(time.Second) // every accept loop has its handlers in place
				for r := range rounds {
					for _, k := range mine {
						k.Send(seqPacket(i, r))
						sent.Add(1)
					}
					time.Sleep(time.Second)
				}
				l.Close()
			})
		}
		wg.Wait()
		s := f.Stats()
		t.Logf("%+v", s)
		if want := int64(nodes * dials * rounds); sent.Load() != want || echoed.Load() != want || answered.Load() != want {
			t.Errorf("sent %d, echoed %d, answered %d; want %d each", sent.Load(), echoed.Load(), answered.Load(), want)
		}
		if s.Links != 0 || s.InFlight != 0 {
			t.Errorf("Stats = %+v, want every link closed and nothing in flight", s)
		}
	})
}

func TestConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"zero", Config{}, ""},
		{"defaults", Default(), ""},
		{"full loss", Config{Loss: 1}, ""},
		{"negative loss", Config{Loss: -0.1}, "simnet.loss"},
		{"loss above 1", Config{Loss: 1.5}, "simnet.loss"},
		{"negative dead_after", Config{DeadAfter: -time.Second}, "simnet.dead_after"},
		{"huge dial_timeout", Config{DialTimeout: 100 * time.Hour}, "simnet.dial_timeout"},
		{"negative workers", Config{Workers: -1}, "simnet.workers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func TestLink_Send_NoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"delayed", Config{Workers: 1}},
		{"lossy", Config{Loss: 0.5, Workers: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFabric(t, tc.cfg)
				la, lb := connect(t, listen(t, f, 1), listen(t, f, 2))
				lb.SetHandler(func([]byte) {})
				pkt := make([]byte, 100)
				send := func() { la.Send(pkt) }
				// Warm up: grow the heap, the free list and the worker's
				// queues to what the measured runs need.
				for range 2000 {
					send()
				}
				time.Sleep(time.Second)
				synctest.Wait()
				if got := testing.AllocsPerRun(1000, send); got != 0 {
					t.Errorf("Send: %v allocations per run, want 0", got)
				}
				time.Sleep(time.Second)
				synctest.Wait()
				if s := f.Stats(); s.Delivered+s.Lost != s.Sent {
					t.Errorf("Stats = %+v, want every packet delivered or lost", s)
				}
			})
		})
	}
}
