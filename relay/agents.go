package relay

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/clusterconnect/clusterconnect/internal/pemkey"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// AgentList says which clusters may connect and how each cluster's agents
// prove it: the agents file's JSON form.
//
//	{"clusters": {
//	   "prod-eu": {"secret": "…"},
//	   "edge-7":  {"publicKeys": ["-----BEGIN PUBLIC KEY-----\n…"]}
//	}}
type AgentList struct {
	Clusters map[string]AgentEntry `json:"clusters"`
}

// AgentEntry is one cluster's credential: exactly one of a shared secret
// or the PEM public keys (several during a rotation) its agents sign
// assertions with.
type AgentEntry struct {
	Secret     string   `json:"secret,omitempty"`
	PublicKeys []string `json:"publicKeys,omitempty"`
}

// ParseAgentList reads an agent list from JSON.
func ParseAgentList(data []byte) (*AgentList, error) {
	var l AgentList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("relay: agent list: %w", err)
	}
	return &l, nil
}

// AgentsConfig configures Agents.
type AgentsConfig struct {
	// PublicURL is the URL agents dial, https://host[:port]: assertions
	// must name it (tunnel.AssertionAudience). Required when the list has
	// public keys.
	PublicURL string
	// Replays is a replay cache a fleet's replicas share (a
	// *etcddir.Directory), so an assertion used at one replica is refused
	// at every other; nil: this relay's memory alone.
	Replays tunnel.ReplayCache
	// Logger receives replay cache failures; nil discards them.
	Logger *slog.Logger
}

// Agents is a tunnel.Authenticator for a list of clusters, each with a
// shared secret or public keys, that can be replaced while the relay
// runs: clusters added and removed, secrets and keys rotated.
type Agents struct {
	secrets    atomic.Pointer[tunnel.SecretAuthenticator]
	keyed      atomic.Pointer[map[string]bool]
	assertions *tunnel.AssertionAuthenticator // nil without PublicURL
}

// NewAgents returns Agents that accept nobody until Set is called.
func NewAgents(cfg AgentsConfig) (*Agents, error) {
	a := &Agents{}
	a.secrets.Store(&tunnel.SecretAuthenticator{})
	a.keyed.Store(&map[string]bool{})
	if cfg.PublicURL != "" {
		audience, err := tunnel.AssertionAudience(cfg.PublicURL)
		if err != nil {
			return nil, fmt.Errorf("relay: public URL: %w", err)
		}
		if a.assertions, err = tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{Audience: audience, Replays: cfg.Replays, Logger: cfg.Logger}); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Authenticate implements tunnel.Authenticator.
func (a *Agents) Authenticate(ctx context.Context, id, cred string) error {
	if (*a.keyed.Load())[id] {
		return a.assertions.Authenticate(ctx, id, cred)
	}
	return a.secrets.Load().Authenticate(ctx, id, cred)
}

// ErrNoPublicURL refuses a list with public keys given to Agents made
// without a public URL: each assertion names the relay it is for.
var ErrNoPublicURL = errors.New("relay: clusters sign assertions, and each names the relay it is for: the relay's public URL is required (the agents' relay URL)")

// Set puts l in force for the handshakes that follow; connections already
// accepted stay. On error nothing changes.
func (a *Agents) Set(l *AgentList) error {
	secrets := tunnel.SecretAuthenticator{}
	keys := map[string][]crypto.PublicKey{}
	keyed := map[string]bool{}
	for id, c := range l.Clusters {
		if err := tunnel.ValidateClusterID(id); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		switch {
		case c.Secret != "" && len(c.PublicKeys) == 0:
			secrets[id] = c.Secret
		case c.Secret == "" && len(c.PublicKeys) > 0:
			for i, p := range c.PublicKeys {
				k, err := pemkey.PublicKey([]byte(p))
				if err != nil {
					return fmt.Errorf("relay: cluster %s: public key %d: %w", id, i, err)
				}
				keys[id] = append(keys[id], k)
			}
			keyed[id] = true
		default:
			return fmt.Errorf("relay: cluster %s needs exactly one of secret or publicKeys", id)
		}
	}
	if len(secrets)+len(keys) == 0 {
		return errors.New("relay: the agent list names no clusters")
	}
	if len(keys) > 0 {
		if a.assertions == nil {
			return ErrNoPublicURL
		}
		if err := a.assertions.SetKeys(keys); err != nil {
			return err
		}
	}
	a.secrets.Store(&secrets)
	a.keyed.Store(&keyed)
	return nil
}
