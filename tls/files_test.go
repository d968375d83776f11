package tls

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
)

func TestOffReturnsTheListener(t *testing.T) {
	for _, mode := range []Mode{"", ModeOff} {
		ln := testkit.Listen(t)
		m, err := New(ln, Options{Mode: mode})
		if err != nil {
			t.Fatalf("mode %q: New = %v", mode, err)
		}
		if m.Listener() != ln || m.TLSConfig() != nil || m.HTTPChallengeAddr() != nil {
			t.Errorf("mode %q: want the plain listener and no TLS config", mode)
		}
		m.Close()
		m.Close() // idempotent
		_ = ln.Close()
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writePair(t, dir, newTestCert(t, "tether.test"))
	_, otherKey := writePair(t, t.TempDir(), newTestCert(t, "other.test"))
	notPEM := filepath.Join(dir, "not.pem")
	testkit.WriteFile(t, notPEM, []byte("hello"))
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"unknown mode", Options{Mode: "on"}, `unknown mode "on"`},
		{"files without key", Options{Mode: ModeFiles, CertFile: certFile}, "both a certificate file and a key file"},
		{"files missing", Options{Mode: ModeFiles, CertFile: filepath.Join(dir, "nope.pem"), KeyFile: keyFile}, "no such file"},
		{"files key mismatch", Options{Mode: ModeFiles, CertFile: certFile, KeyFile: otherKey}, "private key does not match"},
		{"acme without domains", Options{Mode: ModeACME, ACME: ACMEOptions{StorageDir: dir}}, "at least one domain"},
		{"acme without storage", Options{Mode: ModeACME, ACME: ACMEOptions{Domains: []string{"a.test"}}}, "storage directory"},
		{"acme bad root file", Options{Mode: ModeACME, ACME: ACMEOptions{Domains: []string{"a.test"}, StorageDir: dir, CARootFile: notPEM}}, "holds no PEM certificate"},
		{"acme missing root file", Options{Mode: ModeACME, ACME: ACMEOptions{Domains: []string{"a.test"}, StorageDir: dir, CARootFile: notPEM + ".missing"}}, "ca_root_file"},
		{"acme http_listen taken", Options{Mode: ModeACME, ACME: ACMEOptions{Domains: []string{"a.test"}, StorageDir: dir, OnDemand: true, HTTPListen: "256.0.0.1:80"}}, "http_listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := testkit.Listen(t)
			defer ln.Close()
			m, err := New(ln, tt.opts)
			if err == nil {
				m.Close()
				t.Fatalf("New = nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// filesRig is a files-mode Manager serving c1 from certFile and keyFile to
// an echo server, with c2 (same name) ready to rotate to.
type filesRig struct {
	c1, c2            testCert
	roots             *x509.CertPool // trusts both
	certFile, keyFile string
	addr              string // the echo server
	logs              *testkit.SyncBuffer
}

// startFiles starts a filesRig whose files are checked every interval (-1:
// at every handshake).
func startFiles(t *testing.T, interval time.Duration) *filesRig {
	t.Helper()
	log, logs := testLogger()
	r := &filesRig{c1: newTestCert(t, "tether.test"), c2: newTestCert(t, "tether.test"), logs: logs}
	r.roots = testkit.Pool(r.c1, r.c2)
	r.certFile, r.keyFile = writePair(t, t.TempDir(), r.c1)
	m, err := New(testkit.Listen(t), Options{Mode: ModeFiles, CertFile: r.certFile, KeyFile: r.keyFile,
		FileCheckInterval: interval, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	r.addr = serveEcho(t, m).Addr()
	t.Cleanup(m.Close) // before the echo server stops
	return r
}

// TestFilesRotation: a new handshake gets the replaced certificate while a
// connection opened before keeps working, both for files rewritten in place
// and for files renamed over the old ones.
func TestFilesRotation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(t testing.TB, path string, data []byte)
	}{
		{"in place", testkit.WriteFile},
		{"rename", replaceFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startFiles(t, -1)
			old, err := dial(r.addr, "tether.test", r.roots)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			if got := old.ConnectionState().PeerCertificates[0]; !got.Equal(r.c1.Leaf) {
				t.Fatalf("first handshake got serial %v, want %v", got.SerialNumber, r.c1.Leaf.SerialNumber)
			}
			if err := echo(old, "before"); err != nil {
				t.Fatal(err)
			}

			tc.write(t, r.keyFile, r.c2.KeyPEM)
			tc.write(t, r.certFile, r.c2.CertPEM)
			if got := served(t, r.addr, r.roots); !got.Equal(r.c2.Leaf) {
				t.Fatalf("after rotation a new handshake got serial %v, want %v", got.SerialNumber, r.c2.Leaf.SerialNumber)
			}
			if err := echo(old, "after"); err != nil {
				t.Fatalf("connection opened before the rotation: %v", err)
			}
			if !strings.Contains(r.logs.String(), "tls certificate reloaded") {
				t.Errorf("no reload logged:\n%s", r.logs)
			}
		})
	}
}

// TestFilesHalfRotation: a certificate whose key has not arrived yet does
// not replace the working pair; once the key lands, it does.
func TestFilesHalfRotation(t *testing.T) {
	r := startFiles(t, -1)
	testkit.WriteFile(t, r.certFile, r.c2.CertPEM) // key still c1's
	for range 3 {                                  // every handshake retries; the warning is logged once
		if got := served(t, r.addr, r.roots); !got.Equal(r.c1.Leaf) {
			t.Fatalf("half-rotated pair served serial %v, want the previous %v", got.SerialNumber, r.c1.Leaf.SerialNumber)
		}
	}
	if n := strings.Count(r.logs.String(), "do not load"); n != 1 {
		t.Errorf("load failure logged %d times, want once:\n%s", n, r.logs)
	}
	testkit.WriteFile(t, r.keyFile, r.c2.KeyPEM)
	if got := served(t, r.addr, r.roots); !got.Equal(r.c2.Leaf) {
		t.Fatalf("completed rotation served serial %v, want %v", got.SerialNumber, r.c2.Leaf.SerialNumber)
	}
}

// TestFilesCheckInterval: within the interval the files are not looked at.
func TestFilesCheckInterval(t *testing.T) {
	r := startFiles(t, time.Hour)
	replaceFile(t, r.keyFile, r.c2.KeyPEM)
	replaceFile(t, r.certFile, r.c2.CertPEM)
	if got := served(t, r.addr, r.roots); !got.Equal(r.c1.Leaf) {
		t.Fatalf("got serial %v before the check interval passed, want %v", got.SerialNumber, r.c1.Leaf.SerialNumber)
	}
}

// TestFilesProtocols: TLS 1.2 at least, and http/1.1 is the application
// protocol whatever else the client offers.
func TestFilesProtocols(t *testing.T) {
	c := newTestCert(t, "tether.test")
	certFile, keyFile := writePair(t, t.TempDir(), c)
	m, err := New(testkit.Listen(t), Options{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if cfg := m.TLSConfig(); cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	srv := serveEcho(t, m)

	conn, err := dial(srv.Addr(), "tether.test", testkit.Pool(c), "h2", ProtoHTTP11)
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != ProtoHTTP11 {
		t.Errorf("negotiated %q, want %q", p, ProtoHTTP11)
	}
	_ = conn.Close()

	old, err := tls.Dial("tcp", srv.Addr(), &tls.Config{ServerName: "tether.test", RootCAs: testkit.Pool(c),
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		_ = old.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}
