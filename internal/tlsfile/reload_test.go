package tlsfile_test

import (
	"crypto/tls"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/internal/tlsfile"
)

func init() { tlsfile.CheckEvery = 0 } // every handshake looks

// issue writes a server certificate of ca for the loopback names into
// certFile and keyFile, through new files renamed into place as the
// kubelet swaps a Secret's files.
func issue(t *testing.T, ca *pki.CA, name, certFile, keyFile string) {
	t.Helper()
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: name, Hosts: pki.LoopbackHosts, Server: true, Client: true})
	require.NoError(t, err)
	require.NoError(t, leaf.WriteFiles(certFile+".new", keyFile+".new"))
	require.NoError(t, os.Rename(keyFile+".new", keyFile))
	require.NoError(t, os.Rename(certFile+".new", certFile))
}

// serve accepts TLS connections with cfg and echoes on them.
func serve(t *testing.T, cfg *tls.Config) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	kubetest.Echo(ln)
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func echoes(t *testing.T, c *tls.Conn) {
	t.Helper()
	_, err := c.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
}

// A server's certificate rotated on disk is served from the next
// handshake on; a connection made before goes on; a pair half written
// (the key not yet) leaves the old one in force. A client whose CA file
// is rotated trusts the new CA from its next handshake, and no longer the
// old one.
func TestRotatedFilesAreUsedFromTheNextHandshake(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	ca1, err := pki.NewCA("first CA")
	require.NoError(t, err)
	issue(t, ca1, "first", certFile, keyFile)
	require.NoError(t, os.WriteFile(caFile, ca1.CertPEM(), 0o600))

	pair, err := tlsfile.NewKeyPair(certFile, keyFile)
	require.NoError(t, err)
	addr := serve(t, &tls.Config{GetCertificate: pair.GetCertificate})
	roots, err := tlsfile.NewRoots(caFile)
	require.NoError(t, err)
	client := roots.ClientConfig(nil, "127.0.0.1")

	before, err := dial(t, addr, client)
	require.NoError(t, err)
	assert.Equal(t, "first", before.ConnectionState().PeerCertificates[0].Subject.CommonName)

	// A new CA and a certificate of it: the client trusts both CAs while
	// the server moves, as an operator rolls a CA.
	ca2, err := pki.NewCA("second CA")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(caFile, append(ca1.CertPEM(), ca2.CertPEM()...), 0o600))
	issue(t, ca2, "second", certFile, keyFile)
	after, err := dial(t, addr, client)
	require.NoError(t, err)
	assert.Equal(t, "second", after.ConnectionState().PeerCertificates[0].Subject.CommonName)
	echoes(t, before) // established: untouched
	echoes(t, after)

	// The certificate written, the key not yet: the pair in force stays.
	leaf, err := ca2.Issue(pki.LeafOptions{CommonName: "third", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	require.NoError(t, leaf.WriteFiles(certFile, filepath.Join(dir, "third.key")))
	c, err := dial(t, addr, client)
	require.NoError(t, err)
	assert.Equal(t, "second", c.ConnectionState().PeerCertificates[0].Subject.CommonName)
	key, err := os.ReadFile(filepath.Join(dir, "third.key"))
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond) // another modification time
	require.NoError(t, os.WriteFile(keyFile, key, 0o600))
	c, err = dial(t, addr, client)
	require.NoError(t, err)
	assert.Equal(t, "third", c.ConnectionState().PeerCertificates[0].Subject.CommonName)

	// The old CA dropped from the client's file: a server still on it is
	// refused; so is a good certificate for another name.
	require.NoError(t, os.WriteFile(caFile, ca2.CertPEM(), 0o600))
	oldAddr := serve(t, &tls.Config{Certificates: []tls.Certificate{mustCert(t, ca1, "127.0.0.1")}})
	_, err = dial(t, oldAddr, client)
	assert.ErrorContains(t, err, "certificate signed by unknown authority")
	_, err = dial(t, addr, roots.ClientConfig(nil, "relay.example.com"))
	assert.ErrorContains(t, err, "relay.example.com")
}

func mustCert(t *testing.T, ca *pki.CA, host string) tls.Certificate {
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "old", Hosts: []string{host}, Server: true})
	require.NoError(t, err)
	c, err := leaf.TLSCertificate()
	require.NoError(t, err)
	return c
}

// A server that takes client certificates of a CA file read again
// verifies each client against the pool in force.
func TestClientsAreVerifiedAgainstTheRotatedCA(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	ca1, err := pki.NewCA("first CA")
	require.NoError(t, err)
	ca2, err := pki.NewCA("second CA")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(caFile, ca1.CertPEM(), 0o600))
	roots, err := tlsfile.NewRoots(caFile)
	require.NoError(t, err)
	addr := serve(t, &tls.Config{Certificates: []tls.Certificate{mustCert(t, ca1, "127.0.0.1")},
		ClientAuth: tls.RequireAnyClientCert, VerifyConnection: roots.VerifyClient})
	clientOf := func(ca *pki.CA) *tls.Config {
		leaf, err := ca.Issue(pki.LeafOptions{CommonName: "peer", Hosts: pki.LoopbackHosts, Client: true})
		require.NoError(t, err)
		cert, err := leaf.TLSCertificate()
		require.NoError(t, err)
		return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca1.Pool(), MinVersion: tls.VersionTLS13}
	}
	c, err := dial(t, addr, clientOf(ca1))
	require.NoError(t, err)
	echoes(t, c)
	c, err = dial(t, addr, clientOf(ca2))
	if err == nil {
		_, err = c.Write([]byte("x"))
		if err == nil {
			_, err = c.Read(make([]byte, 1)) // TLS 1.3: the server's refusal comes after the handshake
		}
	}
	assert.Error(t, err, "a client of another CA is refused")

	require.NoError(t, os.WriteFile(caFile, ca2.CertPEM(), 0o600))
	c, err = dial(t, addr, clientOf(ca2))
	require.NoError(t, err)
	echoes(t, c)
}
