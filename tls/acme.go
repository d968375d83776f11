package tls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// LetsEncryptProduction is the ACME directory used when ACMEOptions.CAURL
// is empty.
const LetsEncryptProduction = certmagic.LetsEncryptProductionCA

// acmeManager runs certmagic for one listener.
type acmeManager struct {
	log    *slog.Logger
	magic  *certmagic.Config
	cache  *certmagic.Cache
	cancel context.CancelFunc // stops ManageAsync's work and retries
	allow  allowlist

	// httpSrv answers HTTP-01 challenges when ACMEOptions.HTTPListen is
	// set; httpDone is closed when its Serve returns.
	httpSrv  *http.Server
	httpAddr net.Addr
	httpDone chan struct{}
}

// newACME sets up certmagic for the client listener at addr and, unless
// on demand, starts obtaining (or loading from storage) the certificates.
func newACME(addr net.Addr, o ACMEOptions, log *slog.Logger) (_ *acmeManager, err error) {
	if err := checkStorage(o); err != nil {
		return nil, err
	}
	roots, err := TrustedRoots(o.CARootFile)
	if err != nil {
		return nil, fmt.Errorf("ca_root_file: %w", err)
	}
	// The TLS-ALPN-01 (and HTTP-01) solvers try to bind their challenge
	// port. Pointing them at the exact address tether already holds makes
	// that bind fail with "address in use", which certmagic takes to mean
	// "the server on this port answers challenges": tether's listener does,
	// through GetCertificate (and the HTTP-01 handler below).
	host, port, err := hostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("client listener address: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	m := &acmeManager{log: log, cancel: cancel, allow: newAllowlist(o.Domains)}
	defer func() {
		if err != nil {
			m.close()
		}
	}()
	httpLn, httpPort, err := listenHTTP01(o.HTTPListen)
	if err != nil {
		return nil, err
	}
	ca := o.CAURL
	if ca == "" {
		ca = LetsEncryptProduction
	}
	issuer := m.configure(o, certmagic.ACMEIssuer{
		CA:                   ca,
		TrustedRoots:         roots,
		ListenHost:           host,
		AltTLSALPNPort:       port,
		DisableHTTPChallenge: httpLn == nil,
		AltHTTPPort:          httpPort,
	})
	if httpLn != nil {
		m.serveHTTP01(httpLn, issuer)
	}
	if err = m.start(ctx, o, ca); err != nil {
		return nil, err
	}
	return m, nil
}

// checkStorage checks the options name domains and a storage directory, and
// creates the directory: tether fails at startup, not at the first
// issuance, on an unusable one.
func checkStorage(o ACMEOptions) error {
	if len(o.Domains) == 0 {
		return errors.New("acme mode needs at least one domain")
	}
	if o.StorageDir == "" {
		return errors.New("acme mode needs a storage directory")
	}
	if err := os.MkdirAll(o.StorageDir, 0o700); err != nil {
		return fmt.Errorf("storage directory: %w", err)
	}
	return nil
}

// listenHTTP01 opens the HTTP-01 challenge listener at addr and returns it
// with its port; an empty addr opens none (nil, 0).
func listenHTTP01(addr string) (net.Listener, int, error) {
	if addr == "" {
		return nil, 0, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, 0, fmt.Errorf("http_listen: %w", err)
	}
	_, port, err := hostPort(ln.Addr())
	if err != nil {
		_ = ln.Close()
		return nil, 0, fmt.Errorf("http_listen address: %w", err)
	}
	return ln, port, nil
}

// configure builds the certificate cache and the certmagic config (on
// demand if o says so) with one ACME issuer: iss gives its CA and challenge
// settings, configure adds the account and the logger.
func (m *acmeManager) configure(o ACMEOptions, iss certmagic.ACMEIssuer) *certmagic.ACMEIssuer {
	zl := newZapLogger(m.log.Handler()).Named("certmagic")
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		Logger:           zl,
	})
	cfg := certmagic.Config{
		Storage: &certmagic.FileStorage{Path: o.StorageDir},
		Logger:  zl,
		OnEvent: m.onEvent,
	}
	if o.OnDemand {
		cfg.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: m.decide}
	}
	m.magic = certmagic.New(m.cache, cfg)
	iss.Email = o.Email
	// Choosing acme mode is accepting the CA's subscriber agreement;
	// tether runs unattended and cannot ask.
	iss.Agreed = true
	iss.Logger = zl
	issuer := certmagic.NewACMEIssuer(m.magic, iss)
	m.magic.Issuers = []certmagic.Issuer{issuer}
	return issuer
}

// serveHTTP01 answers the issuer's HTTP-01 challenges on ln until close.
func (m *acmeManager) serveHTTP01(ln net.Listener, issuer *certmagic.ACMEIssuer) {
	m.httpSrv = &http.Server{
		Handler:           issuer.HTTPChallengeHandler(http.HandlerFunc(notChallenge)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
	m.httpAddr = ln.Addr()
	m.httpDone = make(chan struct{})
	go func() {
		defer close(m.httpDone)
		if err := m.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("http-01 listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	m.log.Info("answering ACME HTTP-01 challenges", "http_listen", ln.Addr().String())
}

// start begins managing o.Domains' certificates with ctx, unless they are
// obtained on demand.
func (m *acmeManager) start(ctx context.Context, o ACMEOptions, ca string) error {
	if o.OnDemand {
		m.log.Info("acme on demand: certificates are obtained at the first handshake for an allowed name",
			"ca", ca, "allowed", strings.Join(o.Domains, ","))
		return nil
	}
	// Certificates already in storage are loaded before ManageAsync
	// returns; missing or expiring ones are obtained in the background, with
	// retries, so a CA outage does not keep tether from starting.
	m.log.Info("acme: managing certificates", "ca", ca, "domains", strings.Join(o.Domains, ","))
	if err := m.magic.ManageAsync(ctx, o.Domains); err != nil {
		return fmt.Errorf("manage %s: %w", strings.Join(o.Domains, ","), err)
	}
	return nil
}

// getCertificate is the tls.Config.GetCertificate callback: certmagic
// serves cached certificates, TLS-ALPN-01 challenge certificates and, on
// demand, obtains new ones.
func (m *acmeManager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.magic.GetCertificate(hello)
}

// decide is the on-demand DecisionFunc: only allowlisted names may make
// tether ask the CA for a certificate.
func (m *acmeManager) decide(_ context.Context, name string) error {
	if m.allow.allows(name) {
		return nil
	}
	// Debug: anyone who can reach the port can send any server name.
	m.log.Debug("on-demand certificate refused: name not in tls.acme.domains", "name", name)
	return fmt.Errorf("%q is not in tls.acme.domains", name)
}

// onEvent logs certificate events in tether's words; certmagic's own log
// has the details. A new certificate is obtained, then cached: only from
// "loaded" on do handshakes get it.
func (m *acmeManager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		m.log.Info("tls certificate obtained", "name", data["identifier"], "renewal", data["renewal"],
			"issuer", data["issuer"])
	case "cached_managed_cert":
		m.log.Info("tls certificate loaded", "names", data["sans"])
	case "cert_failed":
		m.log.Error("tls certificate not obtained", "name", data["identifier"], "renewal", data["renewal"],
			"err", data["error"])
	}
	return nil
}

// close stops renewals and the HTTP-01 listener, waiting for both.
func (m *acmeManager) close() {
	m.cancel()
	if m.httpSrv != nil {
		_ = m.httpSrv.Close()
	}
	if m.httpDone != nil {
		<-m.httpDone
	}
	if m.cache != nil {
		m.cache.Stop()
	}
}

// notChallenge answers requests to the HTTP-01 listener that are not ACME
// challenges.
func notChallenge(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "tether: this port answers ACME HTTP-01 challenges only; connect with wss://", http.StatusNotFound)
}

// TrustedRoots returns the system roots plus the certificates in file, or
// nil (the system roots) when file is empty.
func TrustedRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// hostPort splits a TCP address into host and numeric port.
func hostPort(addr net.Addr) (string, int, error) {
	host, p, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return host, port, nil
}

// allowlist is the set of names a certificate may be obtained for on
// demand: exact names, and "*.suffix" patterns matching one more label.
type allowlist struct {
	exact map[string]bool
	// suffixes holds ".suffix" for each "*.suffix" entry.
	suffixes map[string]bool
}

func newAllowlist(domains []string) allowlist {
	a := allowlist{exact: map[string]bool{}, suffixes: map[string]bool{}}
	for _, d := range domains {
		d = normalizeName(d)
		if rest, ok := strings.CutPrefix(d, "*."); ok {
			a.suffixes["."+rest] = true
		} else {
			a.exact[d] = true
		}
	}
	return a
}

// allows reports whether name equals an entry or matches a wildcard entry
// in its first label: "*.example.com" allows "a.example.com" but not
// "example.com" or "a.b.example.com", like a wildcard certificate.
func (a allowlist) allows(name string) bool {
	name = normalizeName(name)
	if name == "" || strings.Contains(name, "*") {
		return false
	}
	if a.exact[name] {
		return true
	}
	i := strings.IndexByte(name, '.')
	return i > 0 && a.suffixes[name[i:]]
}

// normalizeName lower-cases a DNS name and drops a trailing dot.
func normalizeName(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
}
