package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/pemkey"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// SecretFile is a tunnel.Credential read from a file at every connection
// attempt, so a rotated secret (a Kubernetes Secret's mounted file) is
// used from the next connection on, without a restart. Surrounding white
// space is not part of the secret.
type SecretFile string

// Credential implements tunnel.Credential.
func (f SecretFile) Credential(context.Context) (string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return "", fmt.Errorf("agent: secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("agent: secret file %s is empty", f)
	}
	return s, nil
}

// KeyFile is a tunnel.Credential that signs an assertion
// (tunnel.AssertionCredential) with the PEM private key in Path, read at
// every connection attempt, so a rotated key is used without a restart.
type KeyFile struct {
	// Path of the PEM private key: PKCS #8, EC or PKCS #1.
	Path string
	// ClusterID the assertions are for.
	ClusterID string
	// Audience names the relay, as tunnel.AssertionCredential.Audience;
	// New sets an empty one from Config.RelayURL.
	Audience string
	// Lifetime of each assertion; default as tunnel.AssertionCredential.
	Lifetime time.Duration
}

// Credential implements tunnel.Credential.
func (k *KeyFile) Credential(ctx context.Context) (string, error) {
	c, err := k.assertion()
	if err != nil {
		return "", err
	}
	return c.Credential(ctx)
}

func (k *KeyFile) assertion() (*tunnel.AssertionCredential, error) {
	b, err := os.ReadFile(k.Path)
	if err != nil {
		return nil, fmt.Errorf("agent: key file: %w", err)
	}
	key, err := pemkey.PrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("agent: key file %s: %w", k.Path, err)
	}
	return &tunnel.AssertionCredential{ClusterID: k.ClusterID, Key: key, Audience: k.Audience, Lifetime: k.Lifetime}, nil
}
