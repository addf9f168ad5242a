package tunnel

import (
	"fmt"
	"net/http"

	"github.com/clusterconnect/clusterconnect/internal/version"

	"golang.org/x/net/http/httpguts"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// ProtocolV1 is the Upgrade token of version 1 of the tunnel protocol. See
// PROTOCOL.md.
const ProtocolV1 = "clusterconnect-tunnel.v1"

// DefaultAgentPath is where a [Relay] serves agents' handshakes.
const DefaultAgentPath = "/tunnel/v1/connect"

// Header names of the handshake and of raw streams.
const (
	HeaderClusterID  = "Clusterconnect-Cluster-Id"
	HeaderAgentID    = "Clusterconnect-Agent-Id"
	headerStreamKind = "Clusterconnect-Stream"
	// HeaderReplica and HeaderReplicas, in a fleet relay's 101 answer,
	// name the replica the agent reached and say how many the fleet has,
	// so an agent can spread its connections over several.
	HeaderReplica  = "Clusterconnect-Replica"
	HeaderReplicas = "Clusterconnect-Replicas"
	// HeaderReconnectWindow, in a relay's 101 answer, is how many seconds
	// the agents it holds should spread their reconnects over when they
	// all lose it at once (it restarted): its agents divided by the
	// handshakes it takes a second (RelayConfig.ReconnectRate).
	HeaderReconnectWindow = "Clusterconnect-Reconnect-Window"
	// HeaderToAgent, on a client's upgrade request, names the agent (its
	// AgentID) whose connections alone may carry it: a session that
	// re-attaches lives in one agent replica. In a fleet the request goes
	// to a replica holding that agent. It is not passed to the agent.
	HeaderToAgent = "Clusterconnect-To-Agent"
	// headerLiveOnly, on a request from one replica to another, asks it
	// to send the request only on a connection heard from lately (a
	// retry), and to answer at once with headerNoLiveConn (503) if it
	// has none.
	headerLiveOnly   = "Clusterconnect-Live-Only"
	headerNoLiveConn = "Clusterconnect-No-Live-Connection"
)

// Raw stream kinds, sent in the Clusterconnect-Stream header of a CONNECT
// stream.
const (
	streamUpgrade = "upgrade" // an HTTP/1.1 Upgrade request from a client
	streamDial    = "dial"    // Relay.DialContext
	// streamMove asks the agent to replace the connection it arrives on
	// (the relay is draining): the agent answers 200 at once, opens a
	// new connection, then sends GOAWAY on this one.
	streamMove = "move"
	// streamFleet tells the agent how many replicas the fleet has now
	// (HeaderReplicas), when that changed since its handshake: the agent
	// answers 200 at once and spreads its connections again if it can.
	streamFleet = "fleet"
	// streamWindow tells the agent the relay's reconnect window now
	// (HeaderReconnectWindow), when it has grown to twice what the agent
	// was told: an agent that connected while the relay held few agents
	// learns that it holds many. The agent answers 200 at once.
	streamWindow = "reconnect-window"
)

// MaxClusterIDLength bounds a cluster ID (a DNS name's length).
const MaxClusterIDLength = 253

// maxCredentialLength bounds the credential in the handshake; signed
// assertions are well under 4 KiB.
const maxCredentialLength = 8 << 10

// Handshake is what an agent sends to open a tunnel connection.
type Handshake struct {
	ClusterID  string
	AgentID    string // free-form, for logs; may be empty
	Credential string // the bearer credential, checked by an Authenticator
}

// ParseHandshake reads an agent's handshake request. It checks the method,
// the Upgrade token, the cluster ID's form and the credential's presence; it
// does not authenticate.
func ParseHandshake(r *http.Request) (Handshake, error) {
	if r.Method != http.MethodGet {
		return Handshake{}, fmt.Errorf("%w: method %s, want GET", ErrBadHandshake, r.Method)
	}
	if !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade") {
		return Handshake{}, fmt.Errorf("%w: no Connection: Upgrade", ErrBadHandshake)
	}
	if !httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], ProtocolV1) {
		return Handshake{}, &VersionError{Offered: r.Header.Values("Upgrade")}
	}
	ids := r.Header.Values(HeaderClusterID)
	if len(ids) != 1 {
		return Handshake{}, fmt.Errorf("%w: want exactly one %s header, got %d", ErrBadHandshake, HeaderClusterID, len(ids))
	}
	if err := ValidateClusterID(ids[0]); err != nil {
		return Handshake{}, fmt.Errorf("%w: %w", ErrBadHandshake, err)
	}
	cred, err := httpx.BearerToken(r.Header)
	if err != nil {
		return Handshake{}, fmt.Errorf("%w: %w", ErrBadHandshake, err)
	}
	if len(cred) > maxCredentialLength {
		return Handshake{}, fmt.Errorf("%w: credential longer than %d bytes", ErrBadHandshake, maxCredentialLength)
	}
	agent := r.Header.Get(HeaderAgentID)
	if len(agent) > 128 || !printable(agent) {
		agent = ""
	}
	return Handshake{ClusterID: ids[0], AgentID: agent, Credential: cred}, nil
}

// ValidateClusterID checks that id is 1 to 253 characters of letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit.
// Cluster IDs appear in URL paths and logs, so nothing else is allowed.
func ValidateClusterID(id string) error {
	if id == "" || len(id) > MaxClusterIDLength {
		return fmt.Errorf("tunnel: cluster ID must be 1 to %d characters, got %d", MaxClusterIDLength, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		edge := i == 0 || i == len(id)-1
		switch {
		case alnum:
		case edge:
			return fmt.Errorf("tunnel: cluster ID %q must start and end with a letter or digit", id)
		case c != '-' && c != '_' && c != '.':
			return fmt.Errorf("tunnel: cluster ID %q: character %d is not a letter, digit, '-', '_' or '.'", id, i+1)
		}
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// newHandshakeRequest builds the request an agent sends.
func newHandshakeRequest(target string, hs Handshake) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ProtocolV1)
	req.Header.Set(HeaderClusterID, hs.ClusterID)
	if hs.AgentID != "" {
		req.Header.Set(HeaderAgentID, hs.AgentID)
	}
	req.Header.Set("Authorization", "Bearer "+hs.Credential)
	req.Header.Set("User-Agent", version.UserAgent("agent"))
	return req, nil
}
