// Package clientproxy is the local client proxy of clusterconnect, what
// az connectedk8s proxy does on a user's machine: kubectl talks TLS to it on
// 127.0.0.1:47011, and it forwards every request to the relay with the
// user's token (from an oauth2.TokenSource of package tokens/source, refreshed before it expires),
// dropping whatever credential kubectl sent.
//
//	p, err := clientproxy.New(&clientproxy.Config{
//		RelayURL:    "https://relay.example.com",
//		ClusterID:   "prod-eu",
//		TokenSource: source.Cached(&source.Command{Command: azCommand}, 0),
//	})
//	kubeconfig.Merge(kubeconfig.Options{SetCurrentContext: true},
//		kubeconfig.ProxyEntry("prod-eu", 0, p.CAPEM()))
//	err = p.ListenAndServe(ctx)
//
// Watches, logs -f, exec, attach and port-forward pass through (upgrades
// over HTTP/1.1 to the relay). Failures kubectl would otherwise show as
// opaque errors, such as a token command failing or the relay being
// unreachable, come back as Kubernetes Status bodies with a message. The
// proxy's CA is generated once and kept (mode 0600) in the user's config
// directory, so kubeconfigs stay valid across restarts; the proxy refuses
// non-loopback addresses unless InsecureListenOnAnyAddress is set.
package clientproxy
