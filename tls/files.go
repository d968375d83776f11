package tls

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// fileCert serves the certificate in a pair of PEM files and loads it again
// when either file changes.
//
// Changes are noticed by looking at the files (os.Stat) during handshakes,
// at most once per interval: a file counts as changed when its identity
// (device and inode), size or modification time differ from when it was
// last loaded. That covers files rewritten in place, files replaced by a
// rename, and Kubernetes Secret volumes, where the names are symlinks that
// the kubelet swaps to a new directory. Polling at handshakes needs no
// goroutine and no inotify watch, and a process that accepts no connection
// has nothing to reload.
//
// A pair that fails to load (a rotation caught halfway, the key not yet
// written) leaves the previous certificate in service; the pair is tried
// again at every check until it loads, and the error is logged once.
type fileCert struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger

	// cert is the certificate served; never nil after newFileCert.
	cert atomic.Pointer[tls.Certificate]
	// nextCheck is the time (Unix nanoseconds) before which handshakes do
	// not look at the files again.
	nextCheck atomic.Int64

	mu sync.Mutex // serialises checks; guards the fields below
	// certStat and keyStat describe the files the served certificate was
	// loaded from.
	certStat, keyStat os.FileInfo
	// lastErr is the last load error logged, so a broken pair is reported
	// once rather than at every check.
	lastErr string
}

// newFileCert loads the pair; it fails when the files cannot be read or do
// not hold a matching certificate and key.
func newFileCert(certFile, keyFile string, interval time.Duration, log *slog.Logger) (*fileCert, error) {
	switch {
	case interval == 0:
		interval = DefaultFileCheckInterval
	case interval < 0:
		interval = 0
	}
	f := &fileCert{certFile: certFile, keyFile: keyFile, interval: interval, log: log}
	// Stat before reading: a change between the two is then seen by the
	// next check (at worst the same pair is loaded twice), never missed.
	cs, ks, err := f.stat()
	if err != nil {
		return nil, err
	}
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	f.certStat, f.keyStat = cs, ks
	f.cert.Store(cert)
	f.nextCheck.Store(time.Now().Add(interval).UnixNano())
	log.Info("tls certificate loaded", append([]any{"cert_file", certFile}, certAttrs(cert.Leaf)...)...)
	warnExpired(log, cert)
	return f, nil
}

// getCertificate is the tls.Config.GetCertificate callback: the pair,
// reloaded first when the files changed. It never fails: a pair that does
// not load leaves the previous certificate in service.
func (f *fileCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.check()
	return f.cert.Load(), nil
}

// check reloads the pair when the interval has passed and a file changed.
// Handshakes arriving while one of them checks do not wait; they get the
// certificate in service.
func (f *fileCert) check() {
	now := time.Now().UnixNano()
	next := f.nextCheck.Load()
	if now < next || !f.nextCheck.CompareAndSwap(next, now+int64(f.interval)) {
		return
	}
	if !f.mu.TryLock() {
		return // another handshake is still checking
	}
	defer f.mu.Unlock()

	cs, ks, err := f.stat()
	if err != nil {
		f.failed(err)
		return
	}
	if sameFile(f.certStat, cs) && sameFile(f.keyStat, ks) {
		f.lastErr = "" // back to the pair in service: report the next problem again
		return
	}
	cert, err := loadKeyPair(f.certFile, f.keyFile)
	if err != nil {
		// The stats are not recorded, so the next check tries again even if
		// the rest of the rotation lands within the file system's timestamp
		// granularity and leaves the sizes alike.
		f.failed(err)
		return
	}
	f.certStat, f.keyStat, f.lastErr = cs, ks, ""
	old := f.cert.Swap(cert)
	if bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		return // touched or rewritten with the same content
	}
	f.log.Info("tls certificate reloaded", append([]any{"cert_file", f.certFile}, certAttrs(cert.Leaf)...)...)
	warnExpired(f.log, cert)
}

// failed logs a reload problem unless it is the one logged last.
func (f *fileCert) failed(err error) {
	if msg := err.Error(); msg != f.lastErr {
		f.lastErr = msg
		f.log.Warn("tls certificate files changed but do not load; still serving the previous certificate",
			"cert_file", f.certFile, "key_file", f.keyFile, "err", err)
	}
}

func (f *fileCert) stat() (cert, key os.FileInfo, err error) {
	if cert, err = os.Stat(f.certFile); err != nil {
		return nil, nil, fmt.Errorf("certificate file: %w", err)
	}
	if key, err = os.Stat(f.keyFile); err != nil {
		return nil, nil, fmt.Errorf("key file: %w", err)
	}
	return cert, key, nil
}

// sameFile reports whether b describes the same, unmodified file as a.
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// loadKeyPair reads and checks a PEM certificate chain and private key.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load %s and %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil { // LoadX509KeyPair parses it since Go 1.23
		return nil, errors.New("load " + certFile + ": no leaf certificate")
	}
	return &cert, nil
}

// warnExpired logs a certificate outside its validity period: it is still
// served (clients decide), but someone should know.
func warnExpired(log *slog.Logger, cert *tls.Certificate) {
	now := time.Now()
	if now.After(cert.Leaf.NotAfter) || now.Before(cert.Leaf.NotBefore) {
		log.Warn("tls certificate is outside its validity period", certAttrs(cert.Leaf)...)
	}
}
