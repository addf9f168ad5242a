package access

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// Policy says which callers may reach which cluster through the relay, and
// how much of it each may take. A cluster the policy does not list is
// refused to everyone, in the same words as a listed cluster a caller may
// not reach.
type Policy struct {
	// Clusters maps cluster IDs to who may reach them.
	Clusters map[string]Cluster `json:"clusters"`
	// Limits apply to every cluster that does not set its own; zero
	// fields take the defaults (see Limits).
	Limits Limits `json:"limits"`
}

// Cluster is the access rule for one cluster: the analogue of the Azure
// permission to list a connected cluster's user credential. A verified
// token passes when its issuer and tenant are allowed and, if any of
// Users, Groups or Apps is set, it matches one of them.
type Cluster struct {
	// Issuers allowed (token iss values); empty allows every issuer the
	// relay's verifier trusts.
	Issuers []string `json:"issuers,omitempty"`
	// Tenants allowed (Entra ID tid); empty allows every tenant the
	// verifier accepts.
	Tenants []string `json:"tenants,omitempty"`
	// Users are allowed callers by object ID (oid; sub for tokens without
	// oid), Groups by group object ID (the groups claim), Apps by client
	// application ID (appid or azp). All empty: any caller whose issuer
	// and tenant are allowed.
	Users  []string `json:"users,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Apps   []string `json:"apps,omitempty"`
	// PassThroughUnverified lets tokens the relay cannot verify — of
	// another issuer or audience, or not JWTs, such as the cluster's own
	// service-account tokens — through to the agent, which must then
	// authenticate them (impersonate.Config.PassThroughForeignTokens). The
	// relay checks nothing of such a caller but its limits, and anyone can
	// learn that such a cluster exists. A token of a trusted issuer that
	// fails its checks (expired, bad signature) is still refused.
	PassThroughUnverified bool `json:"passThroughUnverified,omitempty"`
	// Limits for this cluster, replacing the policy's.
	Limits *Limits `json:"limits,omitempty"`
	// SessionExpiry says what becomes of a long-lived request (a watch,
	// logs -f, exec, attach, port-forward) when the token it was opened
	// with expires: OutliveToken (the default) lets it run on; EndAtExpiry
	// ends it then, with words that say so; RenewToken ends it then too,
	// unless its client presented a fresh token of the same caller first
	// (the client proxy does, see Authorizer.RenewHandler).
	SessionExpiry string `json:"sessionExpiry,omitempty"`
	// StepUp asks for a stronger sign-in (an authentication context) for
	// the requests its rules cover: an exec into production, writes to
	// Secrets. See StepUp.
	StepUp []StepUp `json:"stepUp,omitempty"`
}

// The values of Cluster.SessionExpiry.
const (
	OutliveToken = "outlive"
	EndAtExpiry  = "end"
	RenewToken   = "renew"
)

// Limits bound what callers can take of a cluster. A caller is a verified
// token's issuer and object ID (oid, or sub without it), or an unverified
// token itself; its limits count per cluster.
type Limits struct {
	// CallerStreams bounds one caller's concurrent requests to a cluster
	// (a watch, an exec and a port-forward hold one each for as long as
	// they last); default DefaultCallerStreams.
	CallerStreams int `json:"callerStreams,omitempty"`
	// CallerRate is one caller's sustained requests per second to a
	// cluster, with bursts of CallerBurst; defaults DefaultCallerRate and
	// DefaultCallerBurst.
	CallerRate  float64 `json:"callerRate,omitempty"`
	CallerBurst int     `json:"callerBurst,omitempty"`
	// ClusterStreams, ClusterRate and ClusterBurst bound all callers of a
	// cluster together; defaults DefaultClusterStreams, DefaultClusterRate
	// and DefaultClusterBurst.
	ClusterStreams int     `json:"clusterStreams,omitempty"`
	ClusterRate    float64 `json:"clusterRate,omitempty"`
	ClusterBurst   int     `json:"clusterBurst,omitempty"`
}

// Defaults of Limits. A caller's share is a small part of a cluster's, and
// a cluster's stays under what its agent's connections carry
// (tunnel.DefaultConnections × tunnel.DefaultMaxConcurrentStreams = 4,000
// streams), so no caller, and no cluster's callers together, can take all
// of a tunnel.
const (
	DefaultCallerStreams  = 256
	DefaultCallerRate     = 100
	DefaultCallerBurst    = 200
	DefaultClusterStreams = 3000
	DefaultClusterRate    = 1000
	DefaultClusterBurst   = 2000
)

// Or returns l with each zero field taken from def.
func (l Limits) Or(def Limits) Limits {
	return Limits{
		CallerStreams: orInt(l.CallerStreams, def.CallerStreams), CallerRate: orFloat(l.CallerRate, def.CallerRate),
		CallerBurst: orInt(l.CallerBurst, def.CallerBurst), ClusterStreams: orInt(l.ClusterStreams, def.ClusterStreams),
		ClusterRate: orFloat(l.ClusterRate, def.ClusterRate), ClusterBurst: orInt(l.ClusterBurst, def.ClusterBurst),
	}
}

var defaultLimits = Limits{
	CallerStreams: DefaultCallerStreams, CallerRate: DefaultCallerRate, CallerBurst: DefaultCallerBurst,
	ClusterStreams: DefaultClusterStreams, ClusterRate: DefaultClusterRate, ClusterBurst: DefaultClusterBurst,
}

// withDefaults fills zero fields from p, then from the package defaults.
func (l Limits) withDefaults(p *Limits) Limits {
	if p != nil {
		l = l.Or(*p)
	}
	return l.Or(defaultLimits)
}

func (l Limits) validate() error {
	if l.CallerStreams < 0 || l.CallerBurst < 0 || l.ClusterStreams < 0 || l.ClusterBurst < 0 ||
		l.CallerRate < 0 || l.ClusterRate < 0 || math.IsNaN(l.CallerRate) || math.IsNaN(l.ClusterRate) ||
		math.IsInf(l.CallerRate, 0) || math.IsInf(l.ClusterRate, 0) {
		return errors.New("limits must be positive numbers (or left out for the defaults)")
	}
	return nil
}

func orInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func orFloat(v, def float64) float64 {
	if v > 0 {
		return v
	}
	return def
}

// ParsePolicy reads a policy from JSON, refusing unknown fields (a
// misspelt "grups" must not silently allow everyone) and validating it.
func ParsePolicy(data []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("access: policy: %w", err)
	}
	if dec.More() {
		return nil, errors.New("access: policy: trailing data after the JSON object")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks cluster IDs and limits.
func (p *Policy) Validate() error {
	if err := p.Limits.validate(); err != nil {
		return fmt.Errorf("access: policy: %w", err)
	}
	for id, c := range p.Clusters {
		if err := tunnel.ValidateClusterID(id); err != nil {
			return fmt.Errorf("access: policy: %w", err)
		}
		switch c.SessionExpiry {
		case "", OutliveToken, EndAtExpiry, RenewToken:
		default:
			return fmt.Errorf("access: policy: cluster %s: sessionExpiry %q: use %q, %q or %q", id, c.SessionExpiry, OutliveToken, EndAtExpiry, RenewToken)
		}
		if c.Limits != nil {
			if err := c.Limits.validate(); err != nil {
				return fmt.Errorf("access: policy: cluster %s: %w", id, err)
			}
		}
		for _, s := range c.StepUp {
			if err := s.validate(); err != nil {
				return fmt.Errorf("access: policy: cluster %s: %w", id, err)
			}
		}
		for _, list := range [][]string{c.Issuers, c.Tenants, c.Users, c.Groups, c.Apps} {
			if slices.Contains(list, "") {
				return fmt.Errorf("access: policy: cluster %s: an empty string in a list would match tokens without the claim", id)
			}
		}
	}
	return nil
}
