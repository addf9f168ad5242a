package tlsfile

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// CheckEvery is how often, at most, a KeyPair or Roots looks at its files
// again: at a handshake at least this long after the last look. A
// certificate rotated on disk (cert-manager renewing a Secret, which the
// kubelet swaps in at once) is so used from the first handshake a second
// after; handshakes made before keep what they had, and so do
// established connections.
var CheckEvery = time.Second

// watched is a set of files read again when any of them changes (size,
// modification time or, through a symlink swap, the file itself).
type watched struct {
	paths   []string
	mu      sync.Mutex
	seen    []os.FileInfo
	checked time.Time
}

// changed reports whether the files differ from when last read; it looks
// at most every CheckEvery. mu held.
func (w *watched) changedLocked() bool {
	if time.Since(w.checked) < CheckEvery {
		return false
	}
	w.checked = time.Now()
	for i, p := range w.paths {
		fi, err := os.Stat(p)
		if err != nil {
			return false // being replaced: look again later
		}
		if w.seen[i] == nil || !os.SameFile(fi, w.seen[i]) || fi.ModTime() != w.seen[i].ModTime() || fi.Size() != w.seen[i].Size() {
			return true
		}
	}
	return false
}

// reloadLocked calls load if the files changed since last read; a load
// that fails leaves what is in force, and is tried again at the next
// look. mu held.
func (w *watched) reloadLocked(load func() error) {
	if !w.changedLocked() {
		return
	}
	w.statLocked()
	if load() != nil {
		w.seen[0] = nil // not whole yet: look again
	}
}

// statLocked records the files as they are now. mu held.
func (w *watched) statLocked() {
	w.seen = make([]os.FileInfo, len(w.paths))
	for i, p := range w.paths {
		w.seen[i], _ = os.Stat(p)
	}
	w.checked = time.Now()
}

// KeyPair is a certificate and its key read from PEM files, and read again
// when either changes. A pair that does not load (the certificate written
// and the key not yet) leaves the one in force until it does.
type KeyPair struct {
	w    watched
	cert *tls.Certificate
}

// NewKeyPair reads certFile and keyFile, which must hold a matching pair.
func NewKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{w: watched{paths: []string{certFile, keyFile}}}
	k.w.statLocked()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	k.cert = &cert
	return k, nil
}

// Certificate is the pair in force, read again first if the files changed.
func (k *KeyPair) Certificate() *tls.Certificate {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	k.w.reloadLocked(func() error {
		cert, err := tls.LoadX509KeyPair(k.w.paths[0], k.w.paths[1])
		if err == nil {
			k.cert = &cert
		}
		return err
	})
	return k.cert
}

// GetCertificate is for tls.Config.GetCertificate: a server's side.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Certificate(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.Certificate(), nil
}

// Roots is a PEM CA file, read again when it changes. A file that holds
// no certificate leaves the pool in force.
type Roots struct {
	w    watched
	pool *x509.CertPool
}

// NewRoots reads path, which must hold a certificate.
func NewRoots(path string) (*Roots, error) {
	r := &Roots{w: watched{paths: []string{path}}}
	r.w.statLocked()
	pool, _, err := Pool(path)
	if err != nil {
		return nil, err
	}
	r.pool = pool
	return r, nil
}

// Pool is the CA pool in force, read again first if the file changed.
func (r *Roots) Pool() *x509.CertPool {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	r.w.reloadLocked(func() error {
		pool, _, err := Pool(r.w.paths[0])
		if err == nil {
			r.pool = pool
		}
		return err
	})
	return r.pool
}

// ClientConfig is base (nil: an empty config) for a client of the server
// named serverName (its host name or IP address, as the client dials it),
// verifying it against the pool in force at each handshake. Go checks a
// server against a fixed RootCAs, so this turns that check off
// (InsecureSkipVerify) and makes the same one in VerifyConnection: the
// chain up to the pool, for serverName.
func (r *Roots) ClientConfig(base *tls.Config, serverName string) *tls.Config {
	c := base.Clone()
	if c == nil {
		c = &tls.Config{}
	}
	c.RootCAs = nil
	c.ServerName = serverName
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		return r.verify(cs, serverName, x509.ExtKeyUsageServerAuth)
	}
	return c
}

// VerifyClient checks a client's chain against the pool in force, for a
// server's tls.Config.VerifyConnection with ClientAuth RequireAnyClientCert
// (Go checks clients against a fixed ClientCAs otherwise).
func (r *Roots) VerifyClient(cs tls.ConnectionState) error {
	return r.verify(cs, "", x509.ExtKeyUsageClientAuth)
}

func (r *Roots) verify(cs tls.ConnectionState, name string, usage x509.ExtKeyUsage) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tlsfile: the peer sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: r.Pool(), DNSName: name, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{usage}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("tlsfile: %w", err)
	}
	return nil
}
