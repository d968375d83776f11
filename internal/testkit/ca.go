package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Cert is a certificate and its key, PEM-encoded, valid from an hour ago
// for a day.
type Cert struct {
	CertPEM, KeyPEM []byte
	Leaf            *x509.Certificate
	key             *ecdsa.PrivateKey
}

// Pool returns a pool trusting certs.
func Pool(certs ...Cert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.Leaf)
	}
	return p
}

// Write writes the certificate and key to certFile and keyFile.
func (c Cert) Write(t testing.TB, certFile, keyFile string) {
	t.Helper()
	WriteFile(t, certFile, c.CertPEM)
	WriteFile(t, keyFile, c.KeyPEM)
}

// SelfSigned makes a self-signed ECDSA server certificate for names (DNS
// names or IP addresses); it is its own trust anchor.
func SelfSigned(t testing.TB, names ...string) Cert {
	t.Helper()
	return makeCert(t, nil, true, names)
}

// CA is a throwaway certificate authority that writes its files to a
// temporary directory.
type CA struct {
	Cert
	File string // the root certificate, PEM
	dir  string
	n    int
}

// NewCA makes a CA and writes its root to ca.pem in a temporary directory.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca := &CA{Cert: makeCert(t, nil, true, []string{"tether test CA"}), dir: t.TempDir()}
	ca.File = filepath.Join(ca.dir, "ca.pem")
	WriteFile(t, ca.File, ca.CertPEM)
	return ca
}

// Pool returns a pool trusting the CA.
func (ca *CA) Pool() *x509.CertPool { return Pool(ca.Cert) }

// Issue signs a leaf for names (DNS names or IP addresses).
func (ca *CA) Issue(t testing.TB, names ...string) Cert {
	t.Helper()
	return makeCert(t, &ca.Cert, false, names)
}

// IssueFiles signs a leaf for names and writes it and its key to new files
// in the CA's directory.
func (ca *CA) IssueFiles(t testing.TB, names ...string) (certFile, keyFile string, leaf *x509.Certificate) {
	t.Helper()
	c := ca.Issue(t, names...)
	ca.n++
	certFile = filepath.Join(ca.dir, fmt.Sprintf("leaf%d.crt", ca.n))
	keyFile = filepath.Join(ca.dir, fmt.Sprintf("leaf%d.key", ca.n))
	c.Write(t, certFile, keyFile)
	return certFile, keyFile, c.Leaf
}

// makeCert signs a certificate for names with parent (nil: self-signed).
func makeCert(t testing.TB, parent *Cert, isCA bool, names []string) Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.Leaf, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return Cert{
		CertPEM: PEM("CERTIFICATE", der),
		KeyPEM:  PEM("PRIVATE KEY", keyDER),
		Leaf:    leaf,
		key:     key,
	}
}

// PEM encodes der as one PEM block of type typ.
func PEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// WriteFile writes data to path (mode 0600), failing the test on error.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
