// Package source supplies the token a client sends: the user's side of
// clusterconnect (the client proxy and the exec credential plugin), apart
// from the server-side verifier in package tokens, so that a client binary
// does not link the verifier.
//
// Every source is a [golang.org/x/oauth2.TokenSource]:
//
//   - [Static] returns one token;
//   - [File] reads it from a file, again whenever the file changes (a
//     projected service-account token, a token a sidecar renews);
//   - [Command] runs a command such as `az account get-access-token` and
//     understands what such commands print.
//
// [Cached] keeps a source's token until shortly before it expires, with
// oauth2.ReuseTokenSourceWithExpiry: concurrent callers share one fetch.
//
//	src := source.Cached(&source.Command{Command: []string{
//		"az", "account", "get-access-token", "--resource", "api://my-server-app", "-o", "json",
//	}}, 0)
//	tok, err := src.Token()
//	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
//
// [DiskCache] keeps tokens in files (0600, one per key, under a file lock)
// so that separate processes — each kubectl call's exec plugin, the next
// step of a CI job — share one sign-in; it hands a stale token to its
// [Fetcher], which uses the refresh token where the flow gave one.
// Package [github.com/clusterconnect/clusterconnect/tokens/signin] has the
// fetchers that sign in to Entra ID.
//
// Errors wrap [ErrNoToken] and never contain a token.
package source
