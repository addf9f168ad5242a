// Package pemkey reads keys from PEM, once for every package that takes
// a key from a file: the agent's assertion key, the relay's registered
// public keys, sign-in certificates' keys, proof-of-possession keys and
// test CAs.
package pemkey

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
)

// Errors a caller can tell apart; each wraps into a message naming what
// was read.
var (
	ErrNotPEM      = errors.New("not PEM")
	ErrNotSigner   = errors.New("not a signing key")
	ErrUnsupported = errors.New("not a PKCS #8, PKCS #1 or EC private key")
)

// PrivateKey returns the first private key in b: PKCS #8 ("PRIVATE
// KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY"). Blocks
// of other types, such as certificates before the key, are skipped.
func PrivateKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, ErrNotPEM
		}
		if IsPrivateKey(blk) {
			return FromBlock(blk)
		}
	}
}

// IsPrivateKey reports whether blk's type names a private key.
func IsPrivateKey(blk *pem.Block) bool {
	switch blk.Type {
	case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
		return true
	}
	return false
}

// FromBlock parses a private key block, whatever its type says: PKCS #8,
// then SEC 1, then PKCS #1.
func FromBlock(blk *pem.Block) (crypto.Signer, error) {
	der := blk.Bytes
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		if ec, err := x509.ParseECPrivateKey(der); err == nil {
			return ec, nil
		}
		if rsa, err := x509.ParsePKCS1PrivateKey(der); err == nil {
			return rsa, nil
		}
		return nil, ErrUnsupported
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, ErrNotSigner
	}
	return s, nil
}

// PublicKey returns the public key of the first PEM block in b, a PKIX
// "PUBLIC KEY".
func PublicKey(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, ErrNotPEM
	}
	return x509.ParsePKIXPublicKey(blk.Bytes)
}
