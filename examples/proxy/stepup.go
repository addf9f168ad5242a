package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/oauth2"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"

	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
	"github.com/clusterconnect/clusterconnect/tokens/login"
)

// A step-up in direct mode. kubectl never shows its exec plugin a
// response: after a 401 it runs the plugin again, in the same process,
// before its next request (an exec over WebSocket falls back to SPDY: a
// next request at once). So the plugin remembers, per kubectl process and
// cluster, the token it handed out; run again with that token still
// good, it asks the relay which claims challenge the token's caller got
// (relay.ChallengePath) and, if one, signs the person in again to meet
// it. kubectl's kubeconfig entry provides the cluster's server and CA
// (provideClusterInfo), which name the relay and the cluster.

// handedFor is how long the note of a token handed to a kubectl process
// is kept: a kubectl command seldom runs longer.
const handedFor = time.Hour

// execCluster is the cluster kubectl runs the plugin for, from
// KUBERNETES_EXEC_INFO; ok is false outside kubectl or without its info.
func execCluster() (server string, ca []byte, ok bool) {
	var cred clientauthv1.ExecCredential
	if json.Unmarshal([]byte(os.Getenv("KUBERNETES_EXEC_INFO")), &cred) != nil || cred.Spec.Cluster == nil {
		return "", nil, false
	}
	return cred.Spec.Cluster.Server, cred.Spec.Cluster.CertificateAuthorityData, cred.Spec.Cluster.Server != ""
}

// handedPath is where the plugin notes the token it handed this kubectl
// process for server.
func handedPath(dir, server string) string {
	sum := sha256.Sum256([]byte(parentID() + "\n" + server))
	return filepath.Join(dir, "handed", hex.EncodeToString(sum[:12]))
}

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// stepUpIfAsked returns the token to hand kubectl: tok, or a stronger one
// if kubectl runs the plugin again with tok already handed and the relay
// challenged its caller. It notes what it hands out.
func stepUpIfAsked(o *login.Options, src oauth2.TokenSource, tok *oauth2.Token, dir string) *oauth2.Token {
	server, ca, ok := execCluster()
	if !ok || dir == "" {
		return tok
	}
	path := handedPath(dir, server)
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == tokenHash(tok.AccessToken) {
		if claims, err := askChallenge(server, ca, tok.AccessToken); err != nil {
			fmt.Fprintln(os.Stderr, "proxy: asking the relay why it refused the token:", err)
		} else if claims != "" {
			if su, ok := src.(login.StepUpper); !ok {
				fmt.Fprintln(os.Stderr, "proxy:", o.StepUpError())
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				stepped, err := su.StepUp(ctx, claims)
				cancel()
				if err != nil {
					fmt.Fprintln(os.Stderr, "proxy: the relay asks for a stronger sign-in, and it failed:", err)
				} else {
					tok = stepped
				}
			}
		}
	}
	if os.MkdirAll(filepath.Dir(path), 0o700) == nil {
		forget(filepath.Dir(path), handedFor)
		os.WriteFile(path, []byte(tokenHash(tok.AccessToken)), 0o600)
	}
	return tok
}

// askChallenge asks the relay serving server (https://relay/clusters/{id})
// for the claims challenge the token's caller last got for that cluster.
func askChallenge(server string, ca []byte, token string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	cluster, ok := strings.CutPrefix(strings.TrimSuffix(u.Path, "/"), "/clusters/")
	if !ok || cluster == "" || strings.Contains(cluster, "/") {
		return "", fmt.Errorf("the server %s is not a relay's cluster URL", server)
	}
	u.Path, u.RawPath = "", ""
	var relayTLS *tls.Config
	if len(ca) > 0 {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(ca)
		relayTLS = &tls.Config{RootCAs: roots}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return clientproxy.ClaimsChallenge(ctx, u.String(), cluster, relayTLS, token)
}
