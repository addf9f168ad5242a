package relay_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/memnet"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// A relay alone has nowhere to move its agents: when it stops, a request
// in flight gets StopGrace to finish and does, a watch is ended at the
// end of it, and Run returns then, not at a 30 s drain deadline.
func TestLoneRelayStopsWithinItsGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		ca, err := pki.NewCA("stop test CA")
		require.NoError(t, err)
		leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: []string{"relay.test"}, Server: true})
		require.NoError(t, err)
		cert, err := leaf.TLSCertificate()
		require.NoError(t, err)
		srv, err := relay.New(&relay.Config{Listener: n.Listen("relay.test:443"), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
			Agents: tunnel.SecretAuthenticator{"c": "s"}, InsecureSkipClientAuth: true})
		require.NoError(t, err)
		ctx, stop := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- srv.Run(ctx) }()

		slowStarted := make(chan struct{})
		mux := http.NewServeMux()
		mux.HandleFunc("/watch", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "event")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
			close(slowStarted)
			time.Sleep(time.Second)
			io.WriteString(w, "done")
		})
		agentCtx, stopAgent := context.WithCancel(context.Background())
		defer stopAgent()
		agent, err := tunnel.NewAgent(&tunnel.AgentConfig{RelayURL: "https://relay.test", ClusterID: "c", Credential: tunnel.SecretCredential("s"),
			Handler: mux, TLSConfig: &tls.Config{RootCAs: ca.Pool()}, DialContext: n.DialAs("agent"),
			Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
		require.NoError(t, err)
		go agent.Run(agentCtx)
		for !srv.Relay().Connected("c") {
			time.Sleep(time.Millisecond)
		}
		client := &http.Client{Transport: &http.Transport{DialContext: n.Dial, TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}}
		watch, err := client.Get("https://relay.test/clusters/c/watch")
		require.NoError(t, err)
		defer watch.Body.Close()
		events := bufio.NewReader(watch.Body)
		line, err := events.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "event\n", line)
		slow := make(chan string, 1)
		go func() {
			resp, err := client.Get("https://relay.test/clusters/c/slow")
			if err != nil {
				slow <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			slow <- string(b)
		}()
		<-slowStarted

		stopAt := time.Now()
		stop()
		require.NoError(t, <-ran)
		took := time.Since(stopAt)
		t.Logf("Run returned %v after the stop", took)
		assert.LessOrEqual(t, took, relay.DefaultStopGrace+time.Second, "Run returned %v after the stop", took)
		assert.Equal(t, "done", <-slow, "the request in flight finished")
		_, err = events.ReadString('\n')
		assert.Error(t, err, "the watch was ended")
		stopAgent()
	})
}
