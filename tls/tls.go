// Package tls serves tether's client listener over TLS, so browsers can
// connect with wss:// directly.
//
// Three modes, chosen by [Options.Mode]:
//
//   - [ModeOff]: plain ws://; the listener is returned unchanged.
//   - [ModeFiles]: the certificate chain and key in two PEM files, loaded
//     again when either file changes on disk (cert-manager rotating a
//     mounted Secret, certbot's deploy hook). Open connections keep the
//     session they negotiated; only new handshakes see the new certificate.
//   - [ModeACME]: certificates obtained and renewed automatically from an
//     ACME CA by certmagic, validated with TLS-ALPN-01 on the client listener
//     and, optionally, HTTP-01 on a separate plain-HTTP listener. With
//     on-demand issuance a certificate is obtained at the first handshake for
//     a name, but only for names the domains allowlist matches.
//
// Every mode that serves TLS requires TLS 1.2 or later and offers only
// http/1.1 for the WebSocket upgrade (plus acme-tls/1 in acme mode).
//
// The package takes plain options; cmd/tether translates the tls section of
// the configuration into [Options].
package tls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// Mode is how the client listener serves TLS (the tls.mode key).
type Mode string

// Modes.
const (
	// ModeOff serves plain ws:// (TLS terminated elsewhere, or none).
	ModeOff Mode = "off"
	// ModeFiles serves the certificate in Options.CertFile and Options.KeyFile.
	ModeFiles Mode = "files"
	// ModeACME obtains and renews certificates automatically.
	ModeACME Mode = "acme"
)

// Modes returns every Mode, in the order the documentation lists them.
func Modes() []Mode { return []Mode{ModeOff, ModeFiles, ModeACME} }

// ServesTLS reports whether m wraps the listener in TLS (files or acme).
func (m Mode) ServesTLS() bool { return m == ModeFiles || m == ModeACME }

// ALPN protocol names.
const (
	// ProtoHTTP11 is the only application protocol offered: a WebSocket
	// upgrade is an HTTP/1.1 request.
	ProtoHTTP11 = "http/1.1"
	// ProtoACMETLS1 is the TLS-ALPN-01 challenge protocol (RFC 8737).
	ProtoACMETLS1 = "acme-tls/1"
)

// DefaultFileCheckInterval is how often, at most, files mode looks at the
// certificate files for a change when [Options.FileCheckInterval] is 0.
const DefaultFileCheckInterval = time.Second

// Options configures TLS on the client listener.
type Options struct {
	// Mode is [ModeOff] (also for ""), [ModeFiles] or [ModeACME].
	Mode Mode
	// CertFile is the PEM certificate chain, leaf first (files mode).
	CertFile string
	// KeyFile is the PEM private key matching the leaf (files mode).
	KeyFile string
	// FileCheckInterval is the shortest time between two looks at the files
	// for a change (files mode). The files are looked at during handshakes,
	// so a change is served by the first handshake at least this long after
	// the previous check. 0 means DefaultFileCheckInterval; negative checks
	// at every handshake.
	FileCheckInterval time.Duration
	// ACME configures acme mode.
	ACME ACMEOptions
	// Logger receives certificate events (loaded, reloaded, obtained,
	// refused) and certmagic's own log. nil discards them.
	Logger *slog.Logger
}

// ACMEOptions configures acme mode.
type ACMEOptions struct {
	// Email is the ACME account's contact address; optional.
	Email string
	// CAURL is the ACME directory URL; empty means Let's Encrypt production.
	CAURL string
	// CARootFile is a PEM bundle trusted for the CA's HTTPS endpoint in
	// addition to the system roots (a private or test CA such as Pebble).
	CARootFile string
	// Domains are the names to obtain certificates for. With OnDemand they
	// are the allowlist instead: a name gets a certificate only when it
	// equals an entry or matches a "*.suffix" entry in its first label.
	Domains []string
	// StorageDir keeps certificates, keys and the ACME account; it is
	// created when missing. It must survive restarts.
	StorageDir string
	// OnDemand obtains a certificate at the first handshake for an allowed
	// name instead of at startup.
	OnDemand bool
	// HTTPListen, when set, is the host:port of a plain-HTTP listener that
	// answers HTTP-01 challenges (the CA connects to port 80); any other
	// request gets 404. Empty: only TLS-ALPN-01 on the client listener.
	HTTPListen string
}

// Manager serves TLS on one listener and runs the background work behind
// it. Its methods are safe for concurrent use.
type Manager struct {
	ln     net.Listener
	config *tls.Config  // nil in ModeOff
	acme   *acmeManager // nil unless ModeACME
	stop   func()
	once   sync.Once
}

// New sets up TLS on ln, the bound client listener, according to opts: it
// loads the certificate files, or sets up certmagic, binds the HTTP-01
// listener and starts obtaining certificates in the background (acme mode,
// unless on demand). In acme mode ln's address is where TLS-ALPN-01
// challenges are answered, so the CA must reach it on port 443.
//
// New does not take ownership of ln: closing [Manager.Listener] closes it;
// [Manager.Close] stops only the background work.
func New(ln net.Listener, opts Options) (*Manager, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "tls")
	switch opts.Mode {
	case "", ModeOff:
		return &Manager{ln: ln, stop: func() {}}, nil
	case ModeFiles:
		if opts.CertFile == "" || opts.KeyFile == "" {
			return nil, errors.New("files mode needs both a certificate file and a key file")
		}
		fc, err := newFileCert(opts.CertFile, opts.KeyFile, opts.FileCheckInterval, log)
		if err != nil {
			return nil, err
		}
		cfg := baseConfig()
		cfg.GetCertificate = fc.getCertificate
		return &Manager{ln: tls.NewListener(ln, cfg), config: cfg, stop: func() {}}, nil
	case ModeACME:
		am, err := newACME(ln.Addr(), opts.ACME, log)
		if err != nil {
			return nil, err
		}
		cfg := baseConfig()
		cfg.NextProtos = append(cfg.NextProtos, ProtoACMETLS1)
		cfg.GetCertificate = am.getCertificate
		return &Manager{ln: tls.NewListener(ln, cfg), config: cfg, acme: am, stop: am.close}, nil
	default:
		return nil, fmt.Errorf("unknown mode %q (want %s, %s or %s)", opts.Mode, ModeOff, ModeFiles, ModeACME)
	}
}

// baseConfig holds the settings every TLS mode shares.
func baseConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{ProtoHTTP11},
	}
}

// Listener returns the client listener: the one given to [New] wrapped in
// TLS, or that one itself in ModeOff.
func (m *Manager) Listener() net.Listener { return m.ln }

// TLSConfig returns a copy of the server TLS configuration, or nil in
// ModeOff.
func (m *Manager) TLSConfig() *tls.Config {
	if m.config == nil {
		return nil
	}
	return m.config.Clone()
}

// HTTPChallengeAddr returns the address of the HTTP-01 listener, or nil
// when there is none (ACMEOptions.HTTPListen empty, or not acme mode).
func (m *Manager) HTTPChallengeAddr() net.Addr {
	if m.acme == nil {
		return nil
	}
	return m.acme.httpAddr
}

// Close stops the background work: certificate renewal, the HTTP-01
// listener. It does not close the client listener, and open connections
// are unaffected. Calling it again does nothing.
func (m *Manager) Close() { m.once.Do(m.stop) }

// certAttrs describes a certificate for the log.
func certAttrs(leaf *x509.Certificate) []any {
	if leaf == nil {
		return nil
	}
	names := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		names = []string{leaf.Subject.CommonName}
	}
	return []any{"names", strings.Join(names, ","), "issuer", leaf.Issuer.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
}
