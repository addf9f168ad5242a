package tunnel

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
)

// An Authenticator decides, on the relay, whether an agent's credential
// grants the cluster ID it asked for. It is called once per tunnel
// connection, concurrently.
type Authenticator interface {
	Authenticate(ctx context.Context, clusterID, credential string) error
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, clusterID, credential string) error

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, clusterID, credential string) error {
	return f(ctx, clusterID, credential)
}

// A Credential supplies, on the agent, the credential sent with each
// handshake. It is called before every connection attempt, so it may mint a
// fresh assertion each time.
type Credential interface {
	Credential(ctx context.Context) (string, error)
}

// SecretCredential is a per-cluster secret used as the agent's credential.
type SecretCredential string

// Credential returns the secret.
func (s SecretCredential) Credential(context.Context) (string, error) {
	if s == "" {
		return "", errors.New("tunnel: empty shared secret")
	}
	return string(s), nil
}

// SecretAuthenticator authenticates agents by a per-cluster secret, compared in
// constant time. The map is cluster ID → secret; it must not be modified
// after first use.
type SecretAuthenticator map[string]string

// Authenticate checks credential against the cluster's secret.
func (s SecretAuthenticator) Authenticate(_ context.Context, clusterID, credential string) error {
	want, ok := s[clusterID]
	// Compare fixed-length digests so neither the secret's length nor the
	// existence of the cluster shows in the timing.
	got := sha256.Sum256([]byte(credential))
	exp := sha256.Sum256([]byte(want))
	match := subtle.ConstantTimeCompare(got[:], exp[:]) == 1
	switch {
	case !ok || want == "":
		return &AuthError{Reason: "unknown-cluster"}
	case !match:
		return &AuthError{Reason: "bad-secret"}
	}
	return nil
}
