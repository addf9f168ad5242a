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
// Watches, logs -f, exec, attach and port-forward pass through. A watch
// whose connection breaks is resumed from where kubectl is (package
// sessions); an exec, attach or port-forward rides on a session that
// re-attaches through any relay replica when the one it went through, or
// the path to it, goes (package sessions/reattach, Config.Sessions), and
// one that cannot be re-attached ends with words kubectl prints. Failures kubectl would otherwise show as
// opaque errors, such as a token command failing or the relay being
// unreachable, come back as Kubernetes Status bodies with a message. The
// proxy's CA is generated once and kept (mode 0600) in the user's config
// directory, so kubeconfigs stay valid across restarts; the proxy refuses
// non-loopback addresses unless InsecureListenOnAnyAddress is set.
package clientproxy
