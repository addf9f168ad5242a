package oidctest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// PoPKey is a client's proof-of-possession key: what kubelogin
// --pop-enabled keeps to sign each request for Azure Arc's cluster
// connect. The access token is bound to it by its thumbprint ([PoPKey.Cnf]
// in the token's cnf claim); each request carries a PoP token it signs
// ([PoPKey.Sign]).
type PoPKey struct {
	priv *rsa.PrivateKey
	jwk  jose.JSONWebKey
}

// NewPoPKey generates an RSA key of bits (2048 when 0).
func NewPoPKey(bits int) (*PoPKey, error) {
	if bits == 0 {
		bits = 2048
	}
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("oidctest: %w", err)
	}
	return &PoPKey{priv: priv, jwk: jose.JSONWebKey{Key: priv.Public(), Algorithm: string(jose.RS256), Use: "sig"}}, nil
}

// Thumbprint is the key's RFC 7638 SHA-256 thumbprint, base64url, as the
// access token's cnf.kid names it.
func (k *PoPKey) Thumbprint() string {
	t, err := k.jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		panic(err) // an RSA public key always has one
	}
	return base64.RawURLEncoding.EncodeToString(t)
}

// Cnf is the cnf claim of an access token bound to the key; put it in
// EntraClaims.Extra["cnf"].
func (k *PoPKey) Cnf() map[string]any { return map[string]any{"kid": k.Thumbprint(), "xms_ksl": "sw"} }

// PoPClaims are what a PoP token says.
type PoPClaims struct {
	AccessToken string    // at
	Host        string    // u: the cluster it is for
	Time        time.Time // ts; zero means now
	Method      string    // m, optional
	Path        string    // p, optional
	Nonce       string    // nonce, optional
	// Extra is merged in last: it adds claims and overrides the ones above;
	// a nil value removes a claim.
	Extra map[string]any
	// SignWith, if set, signs the token instead of k, which it still
	// carries: a forgery.
	SignWith *PoPKey
}

// Sign makes a PoP token carrying k's public key.
func (k *PoPKey) Sign(c PoPClaims) (string, error) {
	ts := c.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	claims := map[string]any{"at": c.AccessToken, "ts": ts.Unix(), "u": c.Host, "cnf": map[string]any{"jwk": k.jwk}}
	for name, v := range map[string]string{"m": c.Method, "p": c.Path, "nonce": c.Nonce} {
		if v != "" {
			claims[name] = v
		}
	}
	for name, v := range c.Extra {
		if v == nil {
			delete(claims, name)
		} else {
			claims[name] = v
		}
	}
	signer := k
	if c.SignWith != nil {
		signer = c.SignWith
	}
	return Sign(&Key{ID: k.Thumbprint(), Algorithm: jose.RS256, Private: signer.priv}, claims, map[string]any{"typ": "pop"})
}
