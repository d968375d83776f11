package tls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCert is a self-signed certificate and its key, PEM-encoded.
type testCert = testkit.Cert

// newTestCert makes a self-signed ECDSA certificate for names, valid from an
// hour ago for a day.
func newTestCert(t *testing.T, names ...string) testCert { return testkit.SelfSigned(t, names...) }

// replaceFile writes data next to path and renames it over path, the way
// atomic deployers do: path gets a new inode.
func replaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	testkit.WriteFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writePair writes c to cert.pem and key.pem in dir and returns the paths.
func writePair(t *testing.T, dir string, c testCert) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testkit.WriteFile(t, certFile, c.CertPEM)
	testkit.WriteFile(t, keyFile, c.KeyPEM)
	return certFile, keyFile
}

// serveEcho runs an echo server on m's listener; it stops, closing the
// listener and every connection, when the test ends.
func serveEcho(t *testing.T, m *Manager) *testkit.Server {
	t.Helper()
	return testkit.ServeListener(t, m.Listener(), func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c) // the first Read runs the handshake
	})
}

// dial completes a TLS handshake with addr for serverName, trusting roots.
func dial(addr, serverName string, roots *x509.CertPool, protos ...string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		ServerName: serverName,
		RootCAs:    roots,
		NextProtos: protos,
	})
}

// served returns the leaf certificate a new handshake gets.
func served(t *testing.T, addr string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := dial(addr, "tether.test", roots)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// echo sends msg on c and reads it back.
func echo(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

// testLogger returns a debug-level text logger writing to a buffer.
func testLogger() (*slog.Logger, *testkit.SyncBuffer) {
	buf := &testkit.SyncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}
