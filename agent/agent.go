package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/prom"
	"github.com/clusterconnect/clusterconnect/sessions/reattach"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// DefaultWaitForKeys is how long an agent waits for its issuers' keys
// before it connects to the relay; ConnectAtOnce, in Config.WaitForKeys,
// does not wait.
const (
	DefaultWaitForKeys               = 30 * time.Second
	ConnectAtOnce      time.Duration = -1
)

// Config configures an Agent.
type Config struct {
	// RelayURL is the relay, https://host[:port]. Required.
	RelayURL string
	// ClusterID is this cluster's ID at the relay. Required.
	ClusterID string
	// Credential proves the cluster to the relay: a SecretFile, a
	// *KeyFile (whose empty Audience is set from RelayURL), or any
	// tunnel.Credential. Required.
	Credential tunnel.Credential
	// RelayTLS is for the connection to the relay: RootCAs for a private
	// CA. Nil: the system roots.
	RelayTLS *tls.Config

	// Verifier checks callers' tokens. Required.
	Verifier *tokens.Verifier
	// Mapping turns a verified token into the impersonated identity;
	// nil: tokens.EntraMapping().
	Mapping *tokens.Mapping
	// RESTConfig reaches the API server with the agent's own identity;
	// nil: the pod's service account.
	RESTConfig *rest.Config
	// PassThroughForeignTokens and AllowNestedImpersonation are as in
	// impersonate.Config.
	PassThroughForeignTokens bool
	AllowNestedImpersonation bool

	// Tunnel holds the tunnel's settings (see tunnel.AgentConfig):
	// Connections, backoff, timeouts, windows. RelayURL, ClusterID,
	// Credential, Handler, TLSConfig, Registerer and Logger are the
	// Agent's to set.
	Tunnel tunnel.AgentConfig
	// WaitForKeys bounds how long Run waits for the issuers' keys before
	// connecting: an agent that took requests first would answer each
	// with 503 until its keys came. Default DefaultWaitForKeys;
	// ConnectAtOnce does not wait.
	WaitForKeys time.Duration
	// Sessions holds the settings of exec, attach and port-forward
	// sessions opened through a client proxy, which re-attach after the
	// loss of their tunnel connection (see package sessions/reattach):
	// how long the agent keeps one, and the API server's connection
	// under it, waiting; zero fields: the defaults.
	Sessions reattach.Config
	// HealthListen, if set, serves /livez, /healthz, /readyz (the
	// issuers' keys are at hand) and /metrics.
	HealthListen string
	// Registry receives the agent's metrics and is what HealthListen
	// serves at /metrics; nil: a registry of the Agent's own, with the
	// Go runtime and process collectors.
	Registry *prometheus.Registry
	// TracerProvider, if set, traces each request (OpenTelemetry, see
	// impersonate.Config.TracerProvider): spans under the relay's, for
	// the agent's hop, its token check and the API server's request. Nil:
	// none.
	TracerProvider trace.TracerProvider
	// Logger receives connection events and one audit line per request;
	// nil discards them.
	Logger *slog.Logger
}

// Agent is the cluster's side of clusterconnect assembled: it dials out
// to the relay, keeps tunnel connections open, and serves every request
// that arrives with the token-to-impersonation handler in front of the
// API server. Create it with New and call Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	handler *impersonate.Handler
	tunnel  *tunnel.Agent
	// sessions keeps the exec, attach and port-forward sessions that
	// re-attach (package sessions/reattach); their requests are served
	// by handler like any other.
	sessions *reattach.Server
}

// New checks cfg and its credential and returns an agent. It does not
// connect.
func New(cfg *Config) (*Agent, error) {
	c := *cfg
	if c.RelayURL == "" || c.ClusterID == "" {
		return nil, errors.New("agent: the relay URL and the cluster ID are required")
	}
	if c.Credential == nil {
		return nil, errors.New("agent: a credential is required: a secret or a key the relay knows for this cluster")
	}
	if c.Verifier == nil {
		return nil, errors.New("agent: a token verifier is required")
	}
	if k, ok := c.Credential.(*KeyFile); ok && k.Audience == "" {
		kc := *k
		aud, err := tunnel.AssertionAudience(c.RelayURL)
		if err != nil {
			return nil, fmt.Errorf("agent: relay URL: %w", err)
		}
		kc.Audience, c.Credential = aud, &kc
	}
	// Said now rather than at the first connection attempt.
	if _, err := c.Credential.Credential(context.Background()); err != nil {
		return nil, err
	}
	mapping := tokens.EntraMapping()
	if c.Mapping != nil {
		mapping = *c.Mapping
	}
	a := &Agent{cfg: c, log: c.Logger, reg: c.Registry}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.reg == nil {
		a.reg = prom.NewRegistry()
	}
	var err error
	a.handler, err = impersonate.New(&impersonate.Config{
		RESTConfig: c.RESTConfig, Verifier: c.Verifier, Mapping: mapping,
		PassThroughForeignTokens: c.PassThroughForeignTokens, AllowNestedImpersonation: c.AllowNestedImpersonation, Logger: a.log,
		TracerProvider: c.TracerProvider,
	})
	if err != nil {
		return nil, err
	}
	tc := c.Tunnel
	tc.RelayURL, tc.ClusterID, tc.Credential, tc.Handler = c.RelayURL, c.ClusterID, c.Credential, http.HandlerFunc(a.serve)
	tc.TLSConfig, tc.Registerer, tc.Logger = c.RelayTLS, a.reg, a.log
	if a.tunnel, err = tunnel.NewAgent(&tc); err != nil {
		return nil, err
	}
	a.sessions = reattach.NewServer(&reattach.ServerConfig{Config: c.Sessions, AgentID: a.tunnel.ID(), Identify: a.identify})
	return a, nil
}

// serve answers a request from the tunnel: a carrier for a session that
// re-attaches, or a request for the API server.
func (a *Agent) serve(w http.ResponseWriter, r *http.Request) {
	if reattach.IsUpgrade(r) {
		a.sessions.ServeHTTP(w, r)
		return
	}
	a.handler.ServeHTTP(w, r)
}

// identify names the caller of a carrier: a session re-attaches only for
// the identity that opened it (issuer, tenant, object ID), whatever its
// token is by then. A token passed through unverified is named by its
// hash, so only the same token re-attaches.
func (a *Agent) identify(r *http.Request) (string, error) {
	raw, err := httpx.BearerToken(r.Header)
	if err != nil {
		return "", err
	}
	tok, err := a.cfg.Verifier.Verify(r.Context(), raw)
	if err != nil {
		if a.cfg.PassThroughForeignTokens && tokens.IsForeign(err) {
			return tokens.UnverifiedCaller(raw), nil
		}
		return "", err
	}
	return tok.Caller(), nil
}

// serveSessions serves the requests that new sessions carry until the
// Server is closed.
func (a *Agent) serveSessions() {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The request a session carries is recorded under the ID
			// the relay gave its carrier, not one its client wrote.
			if id, _ := r.Context().Value(carrierIDKey{}).(string); id != "" {
				r.Header[httpx.HeaderAuditID] = []string{id}
			}
			a.handler.ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if rc, ok := c.(*reattach.Conn); ok {
				return context.WithValue(ctx, carrierIDKey{}, rc.RequestID())
			}
			return ctx
		},
		ReadHeaderTimeout: 30 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
	}
	srv.Serve(a.sessions)
}

type carrierIDKey struct{}

// Handler is the impersonation handler the agent serves requests with.
func (a *Agent) Handler() *impersonate.Handler { return a.handler }

// Sessions is how many exec, attach and port-forward sessions the agent
// keeps now, attached or waiting to be re-attached.
func (a *Agent) Sessions() int { return a.sessions.Sessions() }

// Tunnel is the agent's side of the tunnel, for Reconnect and Stats.
func (a *Agent) Tunnel() *tunnel.Agent { return a.tunnel }

// Run serves health and metrics, waits for the issuers' keys (up to
// WaitForKeys), and keeps the tunnel connections open until ctx ends;
// then it drains them: GOAWAY, and in-flight streams get the tunnel's
// DrainTimeout to finish.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.HealthListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/healthz", a.handler.Healthz())
		mux.Handle("/livez", a.handler.Healthz())
		mux.Handle("/readyz", a.handler.Readyz())
		mux.Handle("/metrics", prom.Handler(a.reg))
		go httpx.ServeSide(ctx, a.cfg.HealthListen, mux, a.log, "health")
	}
	if wait := a.cfg.WaitForKeys; wait >= 0 {
		a.waitForKeys(ctx, cmp.Or(wait, DefaultWaitForKeys))
	}
	a.log.Info("agent starting", "relay", a.cfg.RelayURL, "cluster", a.cfg.ClusterID)
	go a.serveSessions()
	err := a.tunnel.Run(ctx)
	a.sessions.Close()
	a.log.Info("agent stopped")
	return err
}

// waitForKeys fetches the issuers' keys before the agent connects, for up
// to limit: a second replica started under load answered every request
// with 503 until its keys came. Past limit it connects anyway, and keeps
// trying in the background as requests come.
func (a *Agent) waitForKeys(ctx context.Context, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		err := a.cfg.Verifier.Ready(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			a.log.Warn("issuer keys not fetched; connecting anyway", "err", err)
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}
