package pemkey_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pemkey"
)

// Every encoding the files in the field use reads back as the same key,
// also after a certificate block, as az writes a service principal's
// certificate file.
func TestPrivateKeyEncodings(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	require.NoError(t, err)
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not parsed")})
	for _, tt := range []struct {
		name string
		pem  []byte
		want crypto.Signer
	}{
		{"PKCS #8 EC", pkcs8(ec), ec},
		{"PKCS #8 RSA", pkcs8(rk), rk},
		{"PKCS #8 Ed25519", pkcs8(ed), ed},
		{"SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ec},
		{"PKCS #1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), rk},
		{"after a certificate", append(cert, pkcs8(ec)...), ec},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := pemkey.PrivateKey(tt.pem)
			require.NoError(t, err)
			assert.True(t, tt.want.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()))
		})
	}
	_, err = pemkey.PrivateKey([]byte("no PEM here"))
	assert.ErrorIs(t, err, pemkey.ErrNotPEM)
	_, err = pemkey.PrivateKey(cert)
	assert.ErrorIs(t, err, pemkey.ErrNotPEM, "a file with no key block")
	_, err = pemkey.PrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0}}))
	assert.ErrorIs(t, err, pemkey.ErrUnsupported)
}

func TestPublicKey(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(ec.Public())
	require.NoError(t, err)
	k, err := pemkey.PublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	require.NoError(t, err)
	assert.True(t, ec.PublicKey.Equal(k))
	_, err = pemkey.PublicKey([]byte("-----BEGIN"))
	assert.ErrorIs(t, err, pemkey.ErrNotPEM)
}

// Whatever a key file holds, reading it returns a key or an error, never
// a panic, and a key it returns has its public half.
func FuzzPrivateKey(f *testing.F) {
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGmnf0gd0sX0b+gkPdUqGb1MDz+1jXWmEIuBuCo1Gk7X\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := pemkey.PrivateKey(b)
		if err != nil {
			return
		}
		if k == nil || k.Public() == nil {
			t.Fatalf("a key without a public half from %q", b)
		}
	})
}
