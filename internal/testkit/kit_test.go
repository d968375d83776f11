package testkit

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClientServerPair runs a text event, a ping and the closing handshake
// between a dialled Conn and a ServeWS Conn.
func TestClientServerPair(t *testing.T) {
	got := make(chan map[string]any, 1)
	s := ServeWS(t, Options{KeepFrames: true}, func(c *Conn) {
		ev, _ := c.NextEvent(time.Second)
		got <- ev
		c.Send(map[string]any{"type": "pong.event"})
		c.SendFrame(ws.OpPing, true, []byte("hb"))
		c.SendClose(1000, "bye")
		c.WaitClose(time.Second) // the echo; returning closes the socket
	})
	c := Dial(t, s.URL("/x"), Options{Header: http.Header{"X-Test": {"1"}}})
	c.Send(map[string]any{"type": "hello"})
	if ev := <-got; ev["type"] != "hello" {
		t.Fatalf("server got %v", ev)
	}
	c.WaitEvent("pong.event", time.Second)
	ci := c.WaitClose(time.Second)
	if ci.Code != 1000 || ci.Reason != "bye" {
		t.Fatalf("close %d %q", ci.Code, ci.Reason)
	}
	c.WaitEnd(2 * time.Second)
	WaitFor(t, time.Second, "a pong and a close echo sent", func() bool {
		sent := c.SentFrames()
		return len(sent) == 3 && sent[1].Op == ws.OpPong && sent[2].Op == ws.OpClose && sent[2].Masked
	})
	if c.Pings() != 1 || s.Accepted() != 1 {
		t.Fatalf("pings %d accepted %d", c.Pings(), s.Accepted())
	}
}

// TestNextFrameOverPipe reads frames, control frames included, over a pipe
// and sees the end of the connection.
func TestNextFrameOverPipe(t *testing.T) {
	a, b := net.Pipe()
	client := NewConn(t, a, nil, true, Options{KeepFrames: true, NoPong: true})
	server := NewConn(t, b, nil, false, Options{KeepFrames: true})
	client.SendFrame(ws.OpText, false, []byte("he"))
	client.SendFrame(ws.OpContinuation, true, []byte("llo"))
	f := server.MustFrame(time.Second)
	if f.Op != ws.OpText || f.Fin || !f.Masked || string(f.Payload) != "he" {
		t.Fatalf("first frame %+v", f)
	}
	server.MustFrame(time.Second)
	if ev, _ := server.NextEvent(time.Second); ev["type"] != "<invalid json>" || ev["raw"] != "hello" {
		t.Fatalf("event %v", ev)
	}
	server.SendFrame(ws.OpPing, true, nil)
	if f := client.MustFrame(time.Second); f.Op != ws.OpPing || f.Masked {
		t.Fatalf("ping %+v", f)
	}
	if _, err := server.NextFrame(20 * time.Millisecond); err != ErrTimeout {
		t.Fatalf("NextFrame with nothing sent: %v, want ErrTimeout", err)
	}
	client.Close()
	if _, err := server.NextFrame(time.Second); err == nil || err == ErrTimeout {
		t.Fatalf("NextFrame after close: %v, want the read error", err)
	}
}

// TestReadFrameWithin reads a masked frame raw, unmasked, and times out
// when nothing comes.
func TestReadFrameWithin(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _ = ws.WriteFrame(a, ws.MaskFrame(ws.NewTextFrame([]byte("hi")))) }()
	h, p, err := ReadFrameWithin(b, time.Second)
	if err != nil || h.OpCode != ws.OpText || !h.Masked || string(p) != "hi" {
		t.Fatalf("frame %v masked %v %q %v", h.OpCode, h.Masked, p, err)
	}
	var ne net.Error
	if _, _, err := ReadFrameWithin(b, 20*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("nothing sent: %v, want a timeout", err)
	}
	go func() { _ = ws.WriteFrame(a, ws.NewPingFrame(nil)) }()
	if h, _, err := ReadFrame(b); err != nil || h.OpCode != ws.OpPing {
		t.Fatalf("after the timeout, no deadline: %v %v, want the ping (the deadline cleared)", h.OpCode, err)
	}
}

// TestCAIssuesTrustedLeaves serves a CA-issued leaf over TLS and a
// self-signed one that only its own pool trusts.
func TestCAIssuesTrustedLeaves(t *testing.T) {
	ca := NewCA(t)
	check := func(cert Cert, roots *tls.Config) error {
		pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		ln := tls.NewListener(Listen(t), &tls.Config{Certificates: []tls.Certificate{pair}})
		s := ServeListener(t, ln, func(c net.Conn) {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		})
		defer s.Close()
		c, err := tls.Dial("tcp", s.Addr(), roots)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := check(ca.Issue(t, "tether.test", "127.0.0.1"), &tls.Config{ServerName: "tether.test", RootCAs: ca.Pool()}); err != nil {
		t.Fatalf("CA leaf: %v", err)
	}
	self := SelfSigned(t, "self.test")
	if err := check(self, &tls.Config{ServerName: "self.test", RootCAs: Pool(self)}); err != nil {
		t.Fatalf("self-signed: %v", err)
	}
	if err := check(self, &tls.Config{ServerName: "self.test", RootCAs: ca.Pool()}); err == nil {
		t.Fatal("a self-signed leaf verified against the CA")
	}
}

func TestDeadAddrRefuses(t *testing.T) {
	if c, err := net.Dial("tcp", DeadAddr(t)); err == nil {
		c.Close()
		t.Fatal("dialled a dead address")
	}
}
