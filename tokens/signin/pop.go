package signin

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/pemkey"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// PoPKey is the client's proof-of-possession key. With Config.PoPKey set,
// sign-ins ask Entra ID for access tokens bound to it (token_type=pop,
// req_cnf), and [PoPSource] wraps such a token in a PoP token signed for
// each use, as kubelogin --pop-enabled does for Azure Arc.
type PoPKey struct {
	priv *rsa.PrivateKey
	jwk  jose.JSONWebKey
}

// LoadOrCreatePoPKey reads the RSA key at path, or makes one (2048 bits)
// and writes it there, 0600: the access tokens a cache keeps are bound to
// it, so it lives as long as they do.
func LoadOrCreatePoPKey(path string) (*PoPKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("signin: PoP key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("signin: PoP key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("signin: PoP key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreatePoPKey(path) // another process made it first
		}
		if err != nil {
			return nil, fmt.Errorf("signin: PoP key: %w", err)
		}
		err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("signin: PoP key: %w", err)
		}
		return newPoPKey(priv), nil
	}
	if err != nil {
		return nil, fmt.Errorf("signin: PoP key: %w", err)
	}
	k, err := pemkey.PrivateKey(b)
	priv, ok := k.(*rsa.PrivateKey)
	if err != nil || !ok {
		return nil, fmt.Errorf("signin: PoP key %s is not an RSA private key", path)
	}
	return newPoPKey(priv), nil
}

func newPoPKey(priv *rsa.PrivateKey) *PoPKey {
	return &PoPKey{priv: priv, jwk: jose.JSONWebKey{Key: priv.Public(), Algorithm: string(jose.RS256), Use: "sig"}}
}

// Thumbprint is the key's RFC 7638 SHA-256 thumbprint, base64url: what a
// bound access token's cnf.kid says.
func (k *PoPKey) Thumbprint() string {
	t, _ := k.jwk.Thumbprint(crypto.SHA256) // an RSA public key always has one
	return base64.RawURLEncoding.EncodeToString(t)
}

// params are what a token request adds to be bound to the key.
func (k *PoPKey) params() url.Values {
	cnf, _ := json.Marshal(map[string]string{"kid": k.Thumbprint()})
	return url.Values{"token_type": {"pop"}, "req_cnf": {base64.RawURLEncoding.EncodeToString(cnf)}}
}

// Sign makes a PoP token for one use: the access token, the host it is for
// (u; for Arc the cluster's ARM ID), the time, a nonce and the key.
func (k *PoPKey) Sign(accessToken, host string) (string, error) {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	claims := map[string]any{
		"at": accessToken, "ts": time.Now().Unix(), "u": host, "nonce": hex.EncodeToString(nonce),
		"cnf": map[string]any{"jwk": k.jwk},
	}
	opts := (&jose.SignerOptions{}).WithType("pop").WithHeader("kid", k.Thumbprint())
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k.priv}, opts)
	if err != nil {
		return "", fmt.Errorf("signin: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("signin: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("signin: %w", err)
	}
	return jws.CompactSerialize()
}

// PoPSource wraps the bound access tokens of src in a PoP token signed for
// host at every call. Each PoP token is good once (the cluster remembers
// them), so each says it expires at once: a client proxy calls Token for
// every request, and kubectl runs its exec plugin again for the next one.
func PoPSource(src oauth2.TokenSource, key *PoPKey, host string) oauth2.TokenSource {
	return &popSource{src: src, key: key, host: host}
}

type popSource struct {
	src  oauth2.TokenSource
	key  *PoPKey
	host string
}

func (p *popSource) Token() (*oauth2.Token, error) {
	at, err := p.src.Token()
	if err != nil {
		return nil, err
	}
	tok, err := p.key.Sign(at.AccessToken, p.host)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: tok, TokenType: "pop", Expiry: time.Now()}, nil
}
