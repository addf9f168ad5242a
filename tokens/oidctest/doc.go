// Package oidctest is an OIDC issuer stand-in for tests, for this module's
// and for importers' (as go-oidc ships its own oidctest): it serves discovery
// documents and a JSON Web Key Set over HTTPS on loopback, rotates keys on
// demand, simulates key-set outages, and signs tokens shaped like Microsoft
// Entra ID access tokens, v1 (iss https://sts.windows.net/{tid}/) and v2
// (iss https://login.microsoftonline.com/{tid}/v2.0), with the claims
// Entra sends: aud, tid, oid, upn/preferred_username, groups, roles, idtyp,
// ver, exp/nbf/iat, and the groups-overage pointer.
//
// Its sign-in endpoints behave like Entra's (authorization code with PKCE,
// playing the person at the browser; device code with pending,
// slow_down, expiry and refusal; client credentials with a secret, a
// certificate or a federated token; refresh tokens; a GitHub Actions OIDC
// token endpoint; PoP-bound tokens; claims challenges for authentication
// contexts), it plays Azure's instance metadata service and App Service's
// identity endpoint for managed identities, [PoPKey] signs proof-of-possession
// tokens as kubelogin does, and a Microsoft Graph stand-in answers group
// lookups, paging, throttling and failing on demand.
//
// It also makes the hostile tokens a verifier must reject: alg "none",
// unsigned, HS256 keyed with the public key, tampered payloads, two
// signatures, and tokens signed by keys the issuer never published ([NewKey]).
//
//	is, err := oidctest.Start()
//	…
//	defer is.Close()
//	token, err := is.EntraToken(oidctest.EntraClaims{
//		Tenant: tenantID, Audience: "api://my-server-app", UPN: "alice@example.com",
//	})
package oidctest
