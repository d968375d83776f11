package e2e

// TLS on the client listener, end to end: acme mode against a real ACME
// server (Pebble, started by the test on loopback, validating challenges
// for real through a test DNS server that sends every name to 127.0.0.1),
// files mode with the certificate rotated under a running tether, and the
// tls config rules as `tether config validate` reports them.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherproxy/tether/internal/testkit"
)

// pebbleEnv names the variable holding the Pebble binary to use.
const pebbleEnv = "TETHER_PEBBLE"

// issueTimeout bounds obtaining one certificate from Pebble (account,
// order, validation, finalization; Pebble runs with PEBBLE_VA_NOSLEEP).
const issueTimeout = 90 * time.Second

// TestTLSACME: tether in acme mode obtains a certificate from Pebble, which
// validates tether's TLS-ALPN-01 answer on the client listener (the only
// challenge enabled: no http_listen); a wss:// client trusting Pebble's
// issuing root completes a voice turn. After a restart with the same
// storage_dir the certificate is loaded, not requested again.
func TestTLSACME(t *testing.T) {
	bin := pebblePath(t)
	t.Parallel()
	listen := testkit.DeadAddr(t)
	pb := startPebble(t, bin, pebbleOpts{TLSPort: portOf(t, listen), HTTPPort: portOf(t, testkit.DeadAddr(t))})
	vars := pb.tetherVars(t, listen, `["rt.tether.test"]`, false, "")
	p := startTether(t, "tls-acme.yaml", vars)
	waitLog(t, p, issueTimeout, "tls certificate obtained", "name", "rt.tether.test")
	// certmagic says it obtained the certificate before it caches it, and
	// a handshake in between finds none: the cache's event is the one to wait for.
	waitLog(t, p, stepTimeout, "tls certificate loaded")
	roots := pb.issuingRoots(t)

	c, state := dialWSS(t, p.Listen, "rt.tether.test", roots, stepTimeout)
	leaf := state.PeerCertificates[0]
	if !slices.Equal(leaf.DNSNames, []string{"rt.tether.test"}) {
		t.Errorf("certificate for %q, want [rt.tether.test]", leaf.DNSNames)
	}
	if state.Version < tls.VersionTLS12 || state.NegotiatedProtocol != "http/1.1" {
		t.Errorf("TLS version %x, ALPN %q; want >= TLS 1.2 and http/1.1", state.Version, state.NegotiatedProtocol)
	}
	c.WaitEvent("session.created", stepTimeout)
	if audio, _ := c.voiceTurn(); audio == 0 {
		t.Fatal("no audio in the voice turn")
	}
	c.SendClose(1000, "done")
	c.WaitEnd(stepTimeout)

	// A name tether does not manage gets no certificate.
	if conn, err := tlsHandshake(p.Listen, "other.tether.test", roots); err == nil {
		conn.Close()
		t.Error("handshake for an unmanaged name succeeded")
	}
	if !hasLog(p, "served key authentication certificate", "challenge", "tls-alpn-01") {
		t.Error("tether did not answer a TLS-ALPN-01 challenge on its client listener")
	}

	// The storage directory carries the certificate over a restart.
	p.stop()
	p2 := startTether(t, "tls-acme.yaml", vars)
	waitLog(t, p2, stepTimeout, "tls certificate loaded")
	c2, state2 := dialWSS(t, p2.Listen, "rt.tether.test", roots, stepTimeout)
	if !state2.PeerCertificates[0].Equal(leaf) {
		t.Errorf("after a restart tether serves serial %v, want the stored %v",
			state2.PeerCertificates[0].SerialNumber, leaf.SerialNumber)
	}
	c2.WaitEvent("session.created", stepTimeout)
	c2.voiceTurn()
	if hasLog(p2, "tls certificate obtained") {
		t.Error("tether requested a new certificate although storage_dir had one")
	}
}

// TestTLSACMEOnDemand: with on_demand, the first handshake for a name the
// "*.voice.test" allowlist matches obtains its certificate, here through
// HTTP-01 on http_listen (Pebble's TLS-ALPN-01 port has nobody behind it);
// names outside the allowlist are refused without an order.
func TestTLSACMEOnDemand(t *testing.T) {
	bin := pebblePath(t)
	t.Parallel()
	listen, httpListen := testkit.DeadAddr(t), testkit.DeadAddr(t)
	pb := startPebble(t, bin, pebbleOpts{TLSPort: portOf(t, testkit.DeadAddr(t)), HTTPPort: portOf(t, httpListen)})
	p := startTether(t, "tls-acme.yaml", pb.tetherVars(t, listen, `["*.voice.test"]`, true, httpListen))
	// Nothing is requested at startup.
	time.Sleep(200 * time.Millisecond)
	if hasLog(p, "tls certificate obtained") {
		t.Fatal("a certificate was obtained before any handshake")
	}

	// The Pebble root is known from the start; the client verifies the
	// chain during the (long) first handshake.
	roots := pb.issuingRoots(t)
	c, state := dialWSS(t, p.Listen, "alpha.voice.test", roots, issueTimeout)
	if leaf := state.PeerCertificates[0]; !slices.Equal(leaf.DNSNames, []string{"alpha.voice.test"}) {
		t.Errorf("certificate for %q, want [alpha.voice.test]", leaf.DNSNames)
	}
	c.WaitEvent("session.created", stepTimeout)
	c.voiceTurn()
	if !hasLog(p, "tls certificate obtained", "name", "alpha.voice.test") {
		t.Error("issuance not logged")
	}
	if !hasLog(p, "served key authentication", "challenge", "http-01") {
		t.Error("tether did not answer an HTTP-01 challenge on http_listen")
	}

	for _, name := range []string{"evil.example", "voice.test", "a.b.voice.test"} {
		conn, err := tlsHandshake(p.Listen, name, roots)
		if err == nil {
			conn.Close()
			t.Errorf("handshake for %q succeeded", name)
		}
		waitLog(t, p, stepTimeout, "on-demand certificate refused: name not in tls.acme.domains", "name", name)
	}
	for _, rec := range p.logRecords() {
		if rec["msg"] == "tls certificate obtained" && rec["name"] != "alpha.voice.test" {
			t.Errorf("certificate obtained for %v", rec["name"])
		}
	}
	// Pebble resolves a name only to validate an order for it.
	for _, q := range pb.dns.seen() {
		if strings.HasPrefix(q, "evil.example/") || strings.HasPrefix(q, "a.b.voice.test/") {
			t.Errorf("Pebble looked up %s: an order was placed for a refused name", q)
		}
	}
}

// TestTLSFilesRotation: files mode with the Kubernetes Secret volume layout
// (names are symlinks through ..data, swapped atomically on rotation). After
// the swap new handshakes get the new certificate, while a session opened
// before keeps its connection and streams another turn.
func TestTLSFilesRotation(t *testing.T) {
	t.Parallel()
	ca := testkit.NewCA(t)
	vol := newSecretVolume(t)
	cert1, key1, leaf1 := ca.IssueFiles(t, "rt.tether.test")
	vol.write(t, cert1, key1)
	p := startTether(t, "tls-files.yaml", map[string]string{
		"CertFile": vol.certFile(), "KeyFile": vol.keyFile(),
	})
	waitLog(t, p, stepTimeout, "tls certificate loaded")

	old, state := dialWSS(t, p.Listen, "rt.tether.test", ca.Pool(), stepTimeout)
	if !state.PeerCertificates[0].Equal(leaf1) {
		t.Fatalf("first handshake: serial %v, want %v", state.PeerCertificates[0].SerialNumber, leaf1.SerialNumber)
	}
	old.WaitEvent("session.created", stepTimeout)
	old.voiceTurn()
	before, raw := p.sessions()
	if len(before) != 1 {
		t.Fatalf("sessions before rotation: %s", raw)
	}

	cert2, key2, leaf2 := ca.IssueFiles(t, "rt.tether.test")
	vol.write(t, cert2, key2)
	testkit.WaitFor(t, stepTimeout, "a new handshake to get the rotated certificate", func() bool {
		conn, err := tlsHandshake(p.Listen, "rt.tether.test", ca.Pool())
		if err != nil {
			t.Fatalf("handshake during rotation: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Equal(leaf2)
	})

	waitLog(t, p, stepTimeout, "tls certificate reloaded")

	// The session opened before the rotation streams on.
	old.voiceTurn()
	after, raw := p.sessions()
	if len(after) != 1 || after[0]["id"] != before[0]["id"] {
		t.Fatalf("sessions after rotation: %s, want the one from before (%v)", raw, before[0]["id"])
	}
	if ended, _ := p.metric("tether_sessions_total"); ended != 0 {
		t.Errorf("%v sessions ended during the rotation", ended)
	}

	fresh, state := dialWSS(t, p.Listen, "rt.tether.test", ca.Pool(), stepTimeout)
	if !state.PeerCertificates[0].Equal(leaf2) {
		t.Errorf("new session: serial %v, want %v", state.PeerCertificates[0].SerialNumber, leaf2.SerialNumber)
	}
	fresh.WaitEvent("session.created", stepTimeout)
	fresh.voiceTurn()
}

// TestTLSConfigValidate: every tls rule is reported by `tether config
// validate` with its key path.
func TestTLSConfigValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, tls string
		want      []string // key path, then a word of the message
	}{
		{"files without files", `{mode: files}`,
			[]string{"tls.cert_file: required", "tls.key_file: required"}},
		{"acme without domains or storage", `{mode: acme}`,
			[]string{"tls.acme.domains: must list", "tls.acme.storage_dir: required"}},
		{"on_demand without allowlist", `{mode: acme, acme: {on_demand: true, storage_dir: /tmp/x}}`,
			[]string{"tls.acme.domains: required with on_demand"}},
		{"unreadable ca_root_file", `{mode: acme, acme: {domains: [a.test], storage_dir: /tmp/x, ca_root_file: ` + filepath.Join(dir, "missing.pem") + `}}`,
			[]string{"tls.acme.ca_root_file: cannot read"}},
		{"ca_root_file without certificates", `{mode: acme, acme: {domains: [a.test], storage_dir: /tmp/x, ca_root_file: ` + notPEM + `}}`,
			[]string{"tls.acme.ca_root_file:", "no PEM certificate"}},
		{"wildcard without on_demand", `{mode: acme, acme: {domains: ["*.a.test"], storage_dir: /tmp/x}}`,
			[]string{"tls.acme.domains[0]: a wildcard name needs tls.acme.on_demand"}},
		{"bad wildcard and http_listen", `{mode: acme, acme: {domains: ["a.*.test"], storage_dir: /tmp/x, on_demand: true, http_listen: "80"}}`,
			[]string{"tls.acme.domains[0]: a wildcard must be the whole first label", "tls.acme.http_listen: must be host:port"}},
	}
	for _, tt := range tests {
		file := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".yaml")
		if err := os.WriteFile(file, []byte("tls: "+tt.tls+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, nil, "config", "validate", "--config", file)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1", tt.name, code)
		}
		for _, want := range tt.want {
			if !strings.Contains(stdout+stderr, want) {
				t.Errorf("%s: output lacks %q:\n%s%s", tt.name, want, stdout, stderr)
			}
		}
	}

	ok := filepath.Join(dir, "ok.yaml")
	yaml := `tls: {mode: acme, acme: {domains: ["*.voice.example.com", rt.example.com], on_demand: true, storage_dir: /var/lib/tether, http_listen: ":80"}}` + "\n"
	if err := os.WriteFile(ok, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCLI(t, nil, "config", "validate", "--config", ok); code != 0 {
		t.Errorf("valid acme config: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, stdout, _ := runCLI(t, nil, "config", "defaults"); !strings.Contains(stdout, "http_listen:") {
		t.Error("config defaults lacks tls.acme.http_listen")
	}
}

// ---------------------------------------------------------------------------
// Pebble

// pebblePath returns the Pebble binary: $TETHER_PEBBLE (which must work),
// else pebble on PATH or in tools/bin. The test is skipped only when the
// variable is unset and no binary is found.
func pebblePath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(pebbleEnv); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			t.Fatalf("%s=%s: %v", pebbleEnv, p, err)
		}
		return path
	}
	for _, p := range []string{"pebble", filepath.Join("tools", "bin", "pebble")} {
		if path, err := exec.LookPath(p); err == nil {
			if abs, err := filepath.Abs(path); err == nil {
				return abs
			}
		}
	}
	t.Skipf("no Pebble ACME test server: set %s to its binary, or install it "+
		"(apt-get install pebble, or go build github.com/letsencrypt/pebble/v2/cmd/pebble)", pebbleEnv)
	return ""
}

// pebbleOpts are the ports Pebble validates challenges on: TLS-ALPN-01 at
// TLSPort and HTTP-01 at HTTPPort of whatever address a name resolves to
// (always 127.0.0.1 here).
type pebbleOpts struct {
	TLSPort, HTTPPort int
}

// pebble is a running Pebble.
type pebble struct {
	// DirURL is the ACME directory URL.
	DirURL string
	// CAFile holds the root of Pebble's own HTTPS certificate (a test CA
	// made here; Debian's package ships none): tether's ca_root_file.
	CAFile string
	mgmt   string // management API base URL
	client *http.Client
	dns    *fakeDNS // the resolver Pebble validates through
}

// startPebble runs Pebble on loopback with a fresh test CA for its HTTPS
// listeners and a DNS server resolving every name to 127.0.0.1; it is
// killed when the test ends.
func startPebble(t *testing.T, bin string, o pebbleOpts) *pebble {
	t.Helper()
	ca := testkit.NewCA(t)
	certFile, keyFile, _ := ca.IssueFiles(t, "127.0.0.1", "localhost")
	dns := startFakeDNS(t)
	listen, mgmt := testkit.DeadAddr(t), testkit.DeadAddr(t)
	cfg := renderFixture(t, "tls-pebble.json", map[string]string{
		"PebbleListen":     listen,
		"PebbleManagement": mgmt,
		"PebbleCert":       certFile,
		"PebbleKey":        keyFile,
		"PebbleTLSPort":    strconv.Itoa(o.TLSPort),
		"PebbleHTTPPort":   strconv.Itoa(o.HTTPPort),
	})
	pb := &pebble{
		DirURL: "https://" + listen + "/dir",
		CAFile: ca.File,
		mgmt:   "https://" + mgmt,
		dns:    dns,
		client: &http.Client{Timeout: stepTimeout, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: ca.Pool()},
			DisableKeepAlives: true,
		}},
	}

	var out testkit.SyncBuffer
	cmd := exec.Command(bin, "-config", cfg, "-dnsserver", dns.addr)
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",      // validate at once
		"PEBBLE_WFE_NONCEREJECT=0", // no deliberate badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // every order is validated afresh
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pebble output:\n%s\nDNS queries: %q", out.String(), dns.seen())
		}
	})
	testkit.WaitFor(t, startTimeout, "Pebble's ACME directory", func() bool {
		select {
		case <-exited:
			t.Fatalf("pebble exited early:\n%s", out.String())
		default:
		}
		resp, err := pb.client.Get(pb.DirURL)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	return pb
}

// tetherVars fill tls-acme.yaml for a tether listening on listen that gets
// certificates for domains (a YAML list) from pb, with a fresh storage_dir.
func (pb *pebble) tetherVars(t *testing.T, listen, domains string, onDemand bool, httpListen string) map[string]string {
	return map[string]string{
		"Listen":     listen,
		"CAURL":      pb.DirURL,
		"CARootFile": pb.CAFile,
		"Domains":    domains,
		"StorageDir": filepath.Join(t.TempDir(), "acme"),
		"OnDemand":   strconv.FormatBool(onDemand),
		"HTTPListen": httpListen,
	}
}

// issuingRoots returns a pool holding the root of the chains Pebble issues,
// from its management API.
func (pb *pebble) issuingRoots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := pb.client.Get(pb.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebble /roots/0: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble /roots/0: %d %v", resp.StatusCode, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(body) {
		t.Fatalf("pebble /roots/0 is not PEM: %q", body)
	}
	return roots
}

// fakeDNS answers every A query with 127.0.0.1 and any other query with an
// empty answer, so every name Pebble validates leads to this machine. It
// serves UDP and TCP on the same port (recent Pebble releases ask over TCP).
type fakeDNS struct {
	addr  string
	pc    net.PacketConn
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	qs    []string
	conns map[net.Conn]bool
}

func startFakeDNS(t *testing.T) *fakeDNS {
	t.Helper()
	d := &fakeDNS{conns: map[net.Conn]bool{}}
	// Bind UDP on a free port, then TCP on the same one; retry on the
	// rare clash with another process's TCP port.
	for attempt := 0; d.ln == nil; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			if attempt == 10 {
				t.Fatalf("fake DNS: %v", err)
			}
			continue
		}
		d.pc, d.ln, d.addr = pc, ln, pc.LocalAddr().String()
	}
	d.wg.Go(d.serveUDP)
	d.wg.Go(d.serveTCP)
	t.Cleanup(func() {
		d.pc.Close()
		d.ln.Close()
		d.mu.Lock()
		for c := range d.conns {
			c.Close()
		}
		d.mu.Unlock()
		d.wg.Wait()
	})
	return d
}

func (d *fakeDNS) serveUDP() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if answer := d.answer(buf[:n]); answer != nil {
			_, _ = d.pc.WriteTo(answer, from)
		}
	}
}

// serveTCP handles DNS over TCP: messages prefixed with their length.
func (d *fakeDNS) serveTCP() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		d.mu.Lock()
		d.conns[c] = true
		d.mu.Unlock()
		d.wg.Go(func() {
			defer func() {
				d.mu.Lock()
				delete(d.conns, c)
				d.mu.Unlock()
				c.Close()
			}()
			for {
				var size [2]byte
				if _, err := io.ReadFull(c, size[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(size[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				answer := d.answer(q)
				if answer == nil {
					return
				}
				if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(answer)))); err != nil {
					return
				}
				if _, err := c.Write(answer); err != nil {
					return
				}
			}
		})
	}
}

// answer records the question and returns the response, nil if q does
// not parse.
func (d *fakeDNS) answer(q []byte) []byte {
	name, resp := dnsAnswer(q)
	if resp != nil {
		d.mu.Lock()
		d.qs = append(d.qs, name)
		d.mu.Unlock()
	}
	return resp
}

func (d *fakeDNS) seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.qs)
}

// dnsAnswer builds the response to a DNS query (RFC 1035 section 4): the
// header and first question echoed, with one A record for 127.0.0.1 when
// the question is IN A. It returns nil for anything unparsable.
func dnsAnswer(q []byte) (name string, resp []byte) {
	const headerLen = 12
	if len(q) < headerLen || binary.BigEndian.Uint16(q[4:6]) < 1 {
		return "", nil
	}
	i := headerLen
	var labels []string
	for {
		if i >= len(q) {
			return "", nil
		}
		l := int(q[i])
		if l == 0 {
			i++
			break
		}
		if l > 63 || i+1+l > len(q) {
			return "", nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+4 > len(q) {
		return "", nil
	}
	qtype, qclass := binary.BigEndian.Uint16(q[i:]), binary.BigEndian.Uint16(q[i+2:])
	question := q[headerLen : i+4]

	isA := qtype == 1 && qclass == 1
	resp = make([]byte, 0, headerLen+len(question)+16)
	resp = append(resp, q[0], q[1]) // id
	// QR, opcode 0, AA, RD copied; RA; rcode 0.
	resp = binary.BigEndian.AppendUint16(resp, 0x8400|binary.BigEndian.Uint16(q[2:4])&0x0100|0x0080)
	resp = binary.BigEndian.AppendUint16(resp, 1) // qdcount
	an := uint16(0)
	if isA {
		an = 1
	}
	resp = binary.BigEndian.AppendUint16(resp, an)
	resp = append(resp, 0, 0, 0, 0) // nscount, arcount
	resp = append(resp, question...)
	if isA {
		resp = append(resp, 0xc0, headerLen) // name: pointer to the question's
		resp = binary.BigEndian.AppendUint16(resp, 1)
		resp = binary.BigEndian.AppendUint16(resp, 1)
		resp = binary.BigEndian.AppendUint32(resp, 60)
		resp = binary.BigEndian.AppendUint16(resp, 4)
		resp = append(resp, 127, 0, 0, 1)
	}
	return strings.Join(labels, ".") + fmt.Sprintf("/%d", qtype), resp
}

// ---------------------------------------------------------------------------
// Certificates

// secretVolume lays files out the way the kubelet mounts a Secret: tls.crt
// and tls.key are symlinks into ..data, itself a symlink to a timestamped
// directory that a rotation replaces with one rename.
type secretVolume struct {
	dir string
	gen int
}

func newSecretVolume(t *testing.T) *secretVolume {
	t.Helper()
	v := &secretVolume{dir: t.TempDir()}
	for _, name := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) certFile() string { return filepath.Join(v.dir, "tls.crt") }
func (v *secretVolume) keyFile() string  { return filepath.Join(v.dir, "tls.key") }

// write publishes a new generation holding copies of certFile and keyFile.
func (v *secretVolume) write(t *testing.T, certFile, keyFile string) {
	t.Helper()
	v.gen++
	gen := fmt.Sprintf("..gen_%d", v.gen)
	if err := os.Mkdir(filepath.Join(v.dir, gen), 0o700); err != nil {
		t.Fatal(err)
	}
	for src, name := range map[string]string{certFile: "tls.crt", keyFile: "tls.key"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v.dir, gen, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// Clients and logs

// dialWSS opens a realtime session over wss:// to the listener at addr,
// sending serverName as SNI and Host, trusting roots and offering ALPN
// http/1.1 like a browser. The harness's rtClient handles the rest.
func dialWSS(t *testing.T, addr, serverName string, roots *x509.CertPool, timeout time.Duration) (*rtClient, tls.ConnectionState) {
	t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	url := "wss://" + net.JoinHostPort(serverName, p) + "/v1/realtime?model=gpt-realtime"
	c := testkit.Dial(t, url, testkit.Options{Addr: addr, Timeout: timeout,
		TLS: &tls.Config{ServerName: serverName, RootCAs: roots, NextProtos: []string{"http/1.1"}}})
	return &rtClient{Conn: c, t: t}, c.TLS.ConnectionState()
}

// tlsHandshake runs a bare TLS handshake with the listener at addr.
func tlsHandshake(addr, serverName string, roots *x509.CertPool) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: stepTimeout}
	return tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: serverName, RootCAs: roots,
		NextProtos: []string{"http/1.1"}})
}

// hasLog reports whether tether logged msg with every given key/value
// pair (values compared as text).
func hasLog(p *proc, msg string, kv ...string) bool {
	for _, rec := range p.logRecords() {
		if rec["msg"] != msg {
			continue
		}
		match := true
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(rec[kv[i]]) != kv[i+1] {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

// waitLog waits until tether logs msg with the given key/value pairs.
func waitLog(t *testing.T, p *proc, timeout time.Duration, msg string, kv ...string) {
	t.Helper()
	testkit.WaitFor(t, timeout, fmt.Sprintf("log %q %q", msg, kv), func() bool {
		if p.hasExited() {
			t.Fatalf("tether exited with %d", p.code)
		}
		return hasLog(p, msg, kv...)
	})

}
