package oidctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/go-jose/go-jose/v4"

	"github.com/clusterconnect/clusterconnect/internal/pki"
)

// Issuer is an OIDC issuer on loopback HTTPS. It serves discovery documents
// and one JSON Web Key Set, and signs tokens with the keys in that set.
//
// Paths, shaped like Microsoft Entra ID's:
//
//	/.well-known/openid-configuration                  generic OIDC; issuer is [Issuer.URL]
//	/{tenant}/.well-known/openid-configuration         Entra v1; issuer https://sts.windows.net/{tenant}/
//	/{tenant}/v2.0/.well-known/openid-configuration    Entra v2; issuer https://login.microsoftonline.com/{tenant}/v2.0
//	/keys                                              the key set, shared by all tenants as Entra's is
//
// The Entra issuers are the real ones, so a verifier is tested against the
// strings it will see in production; it is pointed at the stand-in through
// its discovery URL.
type Issuer struct {
	// URL is the base URL, https://127.0.0.1:<port>.
	URL string
	// CA signed the server's certificate.
	CA *pki.CA

	srv *http.Server
	ln  net.Listener

	mu        sync.Mutex
	keys      []*Key        // keys[0] signs by default
	jwksCode  int           // non-zero: answer /keys with this status
	jwksCache string        // Cache-Control header on /keys
	jwksHang  chan struct{} // non-nil: /keys answers only once it is closed

	// The sign-in endpoints' state (signin.go).
	signIn     SignInOptions
	apps       map[string]App          // by client ID
	devices    map[string]*deviceState // by device code
	deviceWake chan struct{}           // closed and replaced when a device code is issued
	refresh    map[string]refreshGrant // live refresh tokens
	grants     map[string]int          // tokens issued, by grant type
	github     map[string]string       // GitHub Actions request token → subject
	graph      graphState              // the Graph stand-in (graph.go)

	// The authorization code flow's state (browser.go).
	browserSet    bool
	browserUser   *EntraClaims
	browserLogins []BrowserLogin
	codes         map[string]*authCode // by code

	identities       map[string]ManagedIdentity // the IMDS stand-in's (imds.go), by client ID
	identityFail     int                        // the status the next identityFails requests get
	identityFails    int
	identityRequests int
	arcKeyDir        string // where the Arc endpoint writes its key files
	arcKey           string // the key its last challenge named

	discoveryHits atomic.Int64
	jwksHits      atomic.Int64
}

// Key is a signing key of the issuer.
type Key struct {
	ID        string
	Algorithm jose.SignatureAlgorithm
	Private   crypto.Signer
	published bool
}

// Start starts an issuer with one RS256 key. Close it when done.
func Start() (*Issuer, error) {
	ca, err := pki.NewCA("oidctest-ca")
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "oidctest", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return nil, err
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("oidctest: %w", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return nil, fmt.Errorf("oidctest: %w", err)
	}
	is := &Issuer{
		URL:        "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)),
		CA:         ca,
		ln:         ln,
		deviceWake: make(chan struct{}),
	}
	if _, err := is.AddKey(jose.RS256); err != nil {
		ln.Close()
		return nil, err
	}
	is.srv = &http.Server{Handler: is.routes(), ErrorLog: log.New(io.Discard, "", 0)}
	go is.srv.Serve(ln)
	return is, nil
}

// Close stops the server.
func (is *Issuer) Close() { is.srv.Close() }

// Client returns an HTTP client that trusts the issuer's certificate.
func (is *Issuer) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: is.CA.Pool()}}}
}

// DiscoveryURL is the generic OIDC discovery document's URL.
func (is *Issuer) DiscoveryURL() string { return is.URL + "/.well-known/openid-configuration" }

// EntraDiscoveryURL is the discovery document's URL for a tenant and token
// version (1 or 2).
func (is *Issuer) EntraDiscoveryURL(tenant string, version int) string {
	if version == 1 {
		return is.URL + "/" + tenant + "/.well-known/openid-configuration"
	}
	return is.URL + "/" + tenant + "/v2.0/.well-known/openid-configuration"
}

// JWKSURL is the key set's URL.
func (is *Issuer) JWKSURL() string { return is.URL + "/keys" }

// EntraIssuer is the iss claim Entra ID puts in access tokens of the given
// version (1 or 2) for a tenant.
func EntraIssuer(tenant string, version int) string {
	if version == 1 {
		return "https://sts.windows.net/" + tenant + "/"
	}
	return "https://login.microsoftonline.com/" + tenant + "/v2.0"
}

// AddKey generates a key for alg (RS256, PS256, ES256, …), publishes it and
// makes it the default signing key. Keys added before stay published, as
// during a real rotation.
func (is *Issuer) AddKey(alg jose.SignatureAlgorithm) (*Key, error) {
	k, err := NewKey(alg)
	if err != nil {
		return nil, err
	}
	k.published = true
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = append([]*Key{k}, is.keys...)
	return k, nil
}

// Rotate publishes a new key of the current key's algorithm, signs with it
// from now on, and withdraws every older key from the key set.
func (is *Issuer) Rotate() (*Key, error) {
	k, err := NewKey(is.SigningKey().Algorithm)
	if err != nil {
		return nil, err
	}
	k.published = true
	is.mu.Lock()
	defer is.mu.Unlock()
	for _, old := range is.keys {
		old.published = false
	}
	is.keys = append([]*Key{k}, is.keys...)
	return k, nil
}

// Keys returns the issuer's keys, newest first, published or not.
func (is *Issuer) Keys() []*Key {
	is.mu.Lock()
	defer is.mu.Unlock()
	return append([]*Key(nil), is.keys...)
}

// SigningKey returns the key tokens are signed with by default.
func (is *Issuer) SigningKey() *Key {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.keys[0]
}

// NewKey generates an unpublished key, for signing tokens the issuer's key
// set does not vouch for.
func NewKey(alg jose.SignatureAlgorithm) (*Key, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.ES512:
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		return nil, fmt.Errorf("oidctest: no key type for algorithm %s", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("oidctest: generating %s key: %w", alg, err)
	}
	id := make([]byte, 8)
	rand.Read(id)
	return &Key{ID: fmt.Sprintf("%x", id), Algorithm: alg, Private: priv}, nil
}

// FailJWKS makes the key set answer with the given HTTP status (0 restores
// it), to test outages.
func (is *Issuer) FailJWKS(status int) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.jwksCode = status
}

// HangJWKS makes the key set accept requests and not answer them, as a hung
// issuer does, until the returned function is called (or the client gives
// up). Requests already waiting are then answered.
func (is *Issuer) HangJWKS() (release func()) {
	hang := make(chan struct{})
	is.mu.Lock()
	is.jwksHang = hang
	is.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			is.mu.Lock()
			is.jwksHang = nil
			is.mu.Unlock()
			close(hang)
		})
	}
}

// SetJWKSCacheControl sets the Cache-Control header of key set responses,
// e.g. "max-age=3600".
func (is *Issuer) SetJWKSCacheControl(v string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.jwksCache = v
}

// JWKSHits is the number of key set requests served so far, failed or not.
func (is *Issuer) JWKSHits() int64 { return is.jwksHits.Load() }

// DiscoveryHits is the number of discovery requests served so far.
func (is *Issuer) DiscoveryHits() int64 { return is.discoveryHits.Load() }

func (is *Issuer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.serveDiscovery(w, is.URL)
	})
	mux.HandleFunc("GET /{tenant}/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.serveDiscovery(w, EntraIssuer(r.PathValue("tenant"), 1))
	})
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.serveDiscovery(w, EntraIssuer(r.PathValue("tenant"), 2))
	})
	mux.HandleFunc("GET /keys", is.serveJWKS)
	is.signInRoutes(mux)
	is.graphRoutes(mux)
	return mux
}

func (is *Issuer) serveDiscovery(w http.ResponseWriter, issuer string) {
	is.discoveryHits.Add(1)
	writeJSON(w, map[string]any{
		"issuer":                                issuer,
		"jwks_uri":                              is.JWKSURL(),
		"authorization_endpoint":                is.URL + "/authorize",
		"token_endpoint":                        is.URL + "/token",
		"response_types_supported":              []string{"code", "id_token", "token id_token"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (is *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	is.jwksHits.Add(1)
	is.mu.Lock()
	hang := is.jwksHang
	is.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		}
	}
	is.mu.Lock()
	code, cacheControl := is.jwksCode, is.jwksCache
	var set jose.JSONWebKeySet
	for _, k := range is.keys {
		if k.published {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.ID, Algorithm: string(k.Algorithm), Use: "sig"})
		}
	}
	is.mu.Unlock()
	if code != 0 {
		http.Error(w, "key set unavailable", code)
		return
	}
	if cacheControl != "" {
		w.Header().Set("Cache-Control", cacheControl)
	}
	writeJSON(w, set)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
