// Package tokens verifies Microsoft Entra ID and other OIDC access tokens
// (JWTs, with go-jose), maps their claims to a Kubernetes identity, and
// supplies tokens on the client side.
//
// # Verifying
//
// A [Verifier] trusts a fixed list of issuers, each with its audiences and,
// for Entra ID, its tenant. [EntraIssuers] builds the v1
// (https://sts.windows.net/{tid}/) and v2
// (https://login.microsoftonline.com/{tid}/v2.0) issuers of each allowed
// tenant, in the public cloud or a national one; there is no
// multi-tenant wildcard.
//
//	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{
//		TenantIDs: []string{tenantID},
//		Audiences: []string{serverAppClientID, "api://my-server-app"},
//	})
//	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers})
//	tok, err := v.Verify(ctx, bearer)
//
// Verify refuses what a careful verifier must: algorithms outside an
// explicit allow-list (RS256 by default; never "none" or HMAC), anything but
// exactly one signature, a missing kid when the issuer has several keys, a
// wrong issuer, audience or tenant, an Entra ID ver that is not its
// issuer's, a missing or passed exp, nbf or iat in the future (beyond a
// small skew), and absent required claims. The claim checks run before any
// key is fetched, so junk tokens cost no requests to the issuer. Keys come
// from OIDC discovery and are cached; an unknown kid causes at most one
// shared refresh, no more often than a minimum interval, which a request
// waits for at most [Config.RefreshWait], and a failed refresh keeps the
// last good keys. Results are cached by an HMAC of the token, a valid token
// never past its exp nor past the refresh that shows its signing key
// withdrawn.
//
// Every error wraps one of the package's sentinels ([ErrExpired],
// [ErrAudience], [ErrTenant], [ErrSignature], [ErrKeySet], …), and no error
// message contains the token.
package tokens
