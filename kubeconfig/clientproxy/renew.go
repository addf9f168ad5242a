package clientproxy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/access"
)

// Renewing the user's open sessions: each long-lived request (a watch,
// logs -f, exec, attach, port-forward) goes to the relay with the proxy's
// session key, and while any is open the proxy presents each new token
// of the user's to the relay with that key, so that a cluster whose
// policy ends sessions when their token expires (sessionExpiry "renew")
// keeps them while the user is signed in.

// renewEvery is how often the proxy looks for a new token while sessions
// are open: well within a token's last minutes, when token sources
// refresh it.
const renewEvery = 2 * time.Second

// renewer keeps what the proxy renews: its key, the sessions open per
// cluster, and the token last presented for them.
type renewer struct {
	key string

	mu        sync.Mutex
	open      map[string]int    // cluster → sessions open
	presented map[string]string // cluster → the Authorization last accepted for all of them
}

func newRenewer() *renewer {
	b := make([]byte, 32)
	rand.Read(b)
	return &renewer{key: base64.RawURLEncoding.EncodeToString(b), open: map[string]int{}, presented: map[string]string{}}
}

// opened counts a session of cluster open until the returned func runs.
func (r *renewer) opened(cluster string) (closed func()) {
	r.mu.Lock()
	r.open[cluster]++
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.open[cluster]--; r.open[cluster] <= 0 {
			delete(r.open, cluster)
			delete(r.presented, cluster)
		}
	}
}

// due returns the clusters whose sessions have not yet seen auth.
func (r *renewer) due(auth string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for c := range r.open {
		if r.presented[c] != auth {
			out = append(out, c)
		}
	}
	return out
}

func (r *renewer) presentedTo(cluster, auth string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open[cluster] > 0 {
		r.presented[cluster] = auth
	}
}

// renewLoop presents new tokens for open sessions until ctx ends.
func (p *Proxy) renewLoop(ctx context.Context) {
	if p.cfg.PassClientToken {
		return // the client's own token: nothing of the proxy's to present
	}
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		auth, err := p.authorization(nil)
		if err != nil {
			continue // the next request says why
		}
		for _, cluster := range p.renew.due(auth) {
			p.present(ctx, cluster, auth)
		}
	}
}

// present sends auth to the relay for the sessions of cluster.
func (p *Proxy) present(ctx context.Context, cluster, auth string) {
	target := *p.relay
	target.Path = "/sessions/renew/" + cluster
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set(access.HeaderSessionKey, p.renew.key)
	resp, err := p.renewClient.Do(req)
	if err != nil {
		p.log.Warn("cannot renew your sessions", "cluster", cluster, "err", err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusOK:
		p.renew.presentedTo(cluster, auth)
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		// A relay that renews nothing (no access policy, or older):
		// its sessions need no renewal.
		p.renew.presentedTo(cluster, auth)
	default:
		p.log.Warn("the relay refused to renew your sessions", "cluster", cluster, "status", resp.StatusCode,
			"reason", strings.TrimSpace(statusMessage(body)))
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			p.renew.presentedTo(cluster, auth) // the relay ended them; asking again changes nothing
		}
	}
}

// sessionCluster is the cluster a request is for: the one its path names,
// or the proxy's own.
func (p *Proxy) sessionCluster(r *http.Request) string {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/clusters/"); ok {
		if id, _, _ := strings.Cut(rest, "/"); id != "" {
			return id
		}
	}
	return p.cfg.ClusterID
}
