package signin

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/pemkey"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
)

// The client credentials grant's assertion type (RFC 7523).
const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// ClientSecret signs a service principal in with its client secret (the
// client credentials grant). Entra gives such tokens no refresh token.
type ClientSecret struct {
	Config
	Secret string
}

// Fetch signs in.
func (s *ClientSecret) Fetch(ctx context.Context, _ *oauth2.Token) (*oauth2.Token, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if s.Secret == "" {
		return nil, errors.New("signin: the client secret is empty")
	}
	tok, err := s.tokenRequest(ctx, s.Secret, nil)
	if err != nil {
		return nil, wrap("client secret sign-in", err)
	}
	return tok, nil
}

// ClientCertificate signs a service principal in with a certificate
// registered on the app: it signs a short-lived assertion with the key
// (RS256, the certificate's SHA-1 thumbprint in x5t and SHA-256 in
// x5t#S256) and sends it instead of a secret.
type ClientCertificate struct {
	Config
	Certificate *x509.Certificate
	// Key is the certificate's private key; RSA, as Entra requires.
	Key crypto.Signer
}

// Fetch signs in.
func (c *ClientCertificate) Fetch(ctx context.Context, _ *oauth2.Token) (*oauth2.Token, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	assertion, err := c.assertion()
	if err != nil {
		return nil, err
	}
	tok, err := c.tokenRequest(ctx, "", url.Values{"client_assertion_type": {jwtBearer}, "client_assertion": {assertion}})
	if err != nil {
		return nil, wrap("certificate sign-in", err)
	}
	return tok, nil
}

func (c *ClientCertificate) assertion() (string, error) {
	if c.Certificate == nil || c.Key == nil {
		return "", errors.New("signin: certificate sign-in needs a certificate and its private key")
	}
	if _, ok := c.Key.Public().(*rsa.PublicKey); !ok {
		return "", errors.New("signin: certificate sign-in needs an RSA key")
	}
	s1, s256 := sha1.Sum(c.Certificate.Raw), sha256.Sum256(c.Certificate.Raw)
	opts := (&jose.SignerOptions{}).WithType("JWT").
		WithHeader("x5t", base64.RawURLEncoding.EncodeToString(s1[:])).
		WithHeader("x5t#S256", base64.RawURLEncoding.EncodeToString(s256[:]))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: c.Key}, opts)
	if err != nil {
		return "", fmt.Errorf("signin: %w", err)
	}
	now := time.Now()
	id := make([]byte, 16)
	rand.Read(id)
	claims := jwt.Claims{
		Issuer: c.ClientID, Subject: c.ClientID, Audience: jwt.Audience{c.Endpoint().TokenURL},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
		Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute)), ID: hex.EncodeToString(id),
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// LoadCertificate reads a PEM file holding a certificate and its private
// key (PKCS #8, PKCS #1 or EC), as `az ad sp create-for-rbac
// --create-cert` writes it.
func LoadCertificate(path string) (*x509.Certificate, crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("signin: %w", err)
	}
	var cert *x509.Certificate
	var key crypto.Signer
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			if cert == nil {
				if cert, err = x509.ParseCertificate(block.Bytes); err != nil {
					return nil, nil, fmt.Errorf("signin: %s: %w", path, err)
				}
			}
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if key, err = pemkey.FromBlock(block); err != nil {
				return nil, nil, fmt.Errorf("signin: %s: %w", path, err)
			}
		}
	}
	if cert == nil || key == nil {
		return nil, nil, fmt.Errorf("signin: %s must hold a PEM certificate and its private key", path)
	}
	return cert, key, nil
}
