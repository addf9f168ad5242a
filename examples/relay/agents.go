package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/clusterconnect/clusterconnect/internal/cli"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// agentsFile is the -agents file.
type agentsFile struct {
	Clusters map[string]struct {
		Secret     string   `json:"secret"`
		PublicKeys []string `json:"publicKeys"`
	} `json:"clusters"`
}

// agents authenticates agents the way the -agents file says, and takes a
// new version of the file without a restart: clusters added, removed,
// their secrets or keys changed. Assertions must name this relay by its
// public URL; with a fleet's replay cache, one used at another replica is
// refused.
type agents struct {
	path       string
	publicURL  string
	secrets    atomic.Pointer[tunnel.SecretAuthenticator]
	keyed      atomic.Pointer[map[string]bool]
	assertions *tunnel.AssertionAuthenticator // nil without -public-url
}

func newAgents(path, publicURL string, replays tunnel.ReplayCache, log *slog.Logger) (*agents, []byte, error) {
	a := &agents{path: path, publicURL: publicURL}
	if publicURL != "" {
		audience, err := tunnel.AssertionAudience(publicURL)
		if err != nil {
			return nil, nil, fmt.Errorf("-public-url: %w", err)
		}
		if a.assertions, err = tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{Audience: audience, Replays: replays, Logger: log}); err != nil {
			return nil, nil, err
		}
	}
	raw, _, err := a.load()
	return a, raw, err
}

// Authenticate implements tunnel.Authenticator.
func (a *agents) Authenticate(ctx context.Context, id, cred string) error {
	if (*a.keyed.Load())[id] {
		return a.assertions.Authenticate(ctx, id, cred)
	}
	return a.secrets.Load().Authenticate(ctx, id, cred)
}

// load reads the file and puts it in force; on error nothing changes. It
// returns the file's bytes and how many clusters it names.
func (a *agents) load() ([]byte, int, error) {
	b, err := cli.ReadFileFlag("agents", a.path)
	if err != nil {
		return nil, 0, err
	}
	var f agentsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return b, 0, fmt.Errorf("-agents %s: %w", a.path, err)
	}
	secrets := tunnel.SecretAuthenticator{}
	keys := map[string][]crypto.PublicKey{}
	keyed := map[string]bool{}
	for id, c := range f.Clusters {
		if err := tunnel.ValidateClusterID(id); err != nil {
			return b, 0, fmt.Errorf("-agents %s: %w", a.path, err)
		}
		switch {
		case c.Secret != "" && len(c.PublicKeys) == 0:
			secrets[id] = c.Secret
		case c.Secret == "" && len(c.PublicKeys) > 0:
			for i, p := range c.PublicKeys {
				blk, _ := pem.Decode([]byte(p))
				if blk == nil {
					return b, 0, fmt.Errorf("-agents %s: cluster %s: public key %d is not PEM", a.path, id, i)
				}
				k, err := x509.ParsePKIXPublicKey(blk.Bytes)
				if err != nil {
					return b, 0, fmt.Errorf("-agents %s: cluster %s: public key %d: %w", a.path, id, i, err)
				}
				keys[id] = append(keys[id], k)
			}
			keyed[id] = true
		default:
			return b, 0, fmt.Errorf("-agents %s: cluster %s needs exactly one of secret or publicKeys", a.path, id)
		}
	}
	if len(secrets)+len(keys) == 0 {
		return b, 0, fmt.Errorf("-agents %s lists no clusters", a.path)
	}
	if len(keys) > 0 {
		if a.assertions == nil {
			return b, 0, fmt.Errorf("-public-url is required: clusters in %s sign assertions, and each names the relay it is for (the agents' -relay-url)", a.path)
		}
		if err := a.assertions.SetKeys(keys); err != nil {
			return b, 0, err
		}
	}
	a.secrets.Store(&secrets)
	a.keyed.Store(&keyed)
	return b, len(f.Clusters), nil
}
