package tokens_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// Verify Microsoft Entra ID access tokens for one server application in one
// tenant and map them to a Kubernetes identity. The issuer here is a local
// stand-in; in production DiscoveryURL is left out and the keys come from
// login.microsoftonline.com.
func ExampleVerifier_entra() {
	entra, _ := oidctest.Start() // stand-in for Entra ID
	defer entra.Close()
	const tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs:    []string{tenant},
		Audiences:    []string{"6e4a9a0c-1f5c-4a4b-9c1e-0d2f4b7c8e11", "api://clusterconnect-server"},
		DiscoveryURL: entra.EntraDiscoveryURL, // only for the stand-in
	})
	if err != nil {
		panic(err)
	}
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})
	if err != nil {
		panic(err)
	}

	bearer, _ := entra.EntraToken(oidctest.EntraClaims{
		Tenant: tenant, Audience: "6e4a9a0c-1f5c-4a4b-9c1e-0d2f4b7c8e11",
		OID: "4b2d8f1e-0000-4000-8000-000000000001", UPN: "alice@contoso.com",
		Groups: []string{"a1f4c7e2-0000-4000-8000-00000000000a"},
	})
	tok, err := v.Verify(context.Background(), bearer)
	if err != nil {
		panic(err)
	}
	m := tokens.EntraMapping()
	id, err := m.Identity(context.Background(), tok)
	if err != nil {
		panic(err)
	}
	fmt.Println(id.Username, id.Groups)

	other, _ := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://some-other-app", UPN: "alice@contoso.com"})
	_, err = v.Verify(context.Background(), other)
	fmt.Println(errors.Is(err, tokens.ErrAudience))
	// Output:
	// alice@contoso.com [a1f4c7e2-0000-4000-8000-00000000000a]
	// true
}

// Any OIDC issuer: its discovery document is at
// {issuer}/.well-known/openid-configuration.
func ExampleVerifier_genericOIDC() {
	idp, _ := oidctest.Start() // stand-in for Dex, Keycloak, Okta…
	defer idp.Close()

	v, err := tokens.NewVerifier(&tokens.Config{
		Issuers:    []tokens.Issuer{{URL: idp.URL, Audiences: []string{"kubernetes"}}},
		HTTPClient: idp.Client(),
	})
	if err != nil {
		panic(err)
	}
	bearer, _ := idp.Token(map[string]any{
		"iss": idp.URL, "aud": "kubernetes", "sub": "jane", "groups": []string{"devs"},
		"exp": time.Now().Add(time.Hour).Unix(),
	})
	tok, err := v.Verify(context.Background(), bearer)
	if err != nil {
		panic(err)
	}
	var m tokens.Mapping // sub as the username, groups as the groups
	id, _ := m.Identity(context.Background(), tok)
	fmt.Println(id.Username, id.Groups)
	// Output: jane [devs]
}
