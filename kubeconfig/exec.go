package kubeconfig

import (
	"encoding/json"
	"fmt"

	"golang.org/x/oauth2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

// ExecCredential returns what an exec credential plugin prints for kubectl
// (client.authentication.k8s.io/v1): the source's token and, when known,
// its expiry, so kubectl runs the plugin again only when it must.
func ExecCredential(src oauth2.TokenSource) ([]byte, error) {
	tok, err := src.Token()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cred := clientauthv1.ExecCredential{
		TypeMeta: metav1.TypeMeta{APIVersion: clientauthv1.SchemeGroupVersion.String(), Kind: "ExecCredential"},
		Status:   &clientauthv1.ExecCredentialStatus{Token: tok.AccessToken},
	}
	if !tok.Expiry.IsZero() {
		exp := metav1.NewTime(tok.Expiry.UTC())
		cred.Status.ExpirationTimestamp = &exp
	}
	return json.Marshal(cred)
}
