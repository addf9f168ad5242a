package source_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// A client that gets its token from the Azure CLI and runs it again only
// five minutes before the token expires.
func ExampleCommand() {
	src := source.Cached(&source.Command{
		Command: []string{"az", "account", "get-access-token", "--resource", "api://clusterconnect-server", "-o", "json"},
	}, 5*time.Minute)
	_ = src // tok, err := src.Token(); req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
}

// A token that something else keeps fresh in a file, such as a projected
// service-account token.
func ExampleFile() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "token")
	os.WriteFile(path, []byte("first-token\n"), 0o600)
	src := source.File(path)

	tok, _ := src.Token()
	fmt.Println(tok.AccessToken)
	os.WriteFile(path, []byte("renewed-token-value\n"), 0o600)
	tok, _ = src.Token()
	fmt.Println(tok.AccessToken)
	// Output:
	// first-token
	// renewed-token-value
}
