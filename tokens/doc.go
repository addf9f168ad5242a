// Package tokens verifies Microsoft Entra ID and other OIDC access tokens
// (JWTs, with go-jose), maps their claims to a Kubernetes identity, and
// supplies tokens on the client side.
//
// The package is being built: its API is not yet available.
package tokens
