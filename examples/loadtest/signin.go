package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// signIn measures what kubectl waits for its exec plugin, `proxy token`,
// per call: with the token cache on disk, and without it (signing in to
// the Entra stand-in, or running a token command, every time); rounds are
// interleaved so that the machine's drift falls on each alike. Then it
// starts many plugin processes at once on an empty cache and counts the
// sign-ins they made.
func signIn(o options) error {
	dir, err := os.MkdirTemp("", "loadtest-signin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "proxy")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/clusterconnect/clusterconnect/examples/proxy").CombinedOutput(); err != nil {
		return fmt.Errorf("go build the proxy (run from the repository): %v: %s", err, out)
	}
	entra, err := oidctest.Start()
	if err != nil {
		return err
	}
	defer entra.Close()
	const tenant, client, server = "72f988bf-86f1-41af-91ab-2d7cd011db47", "5f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b", "api://clusterconnect-server"
	entra.AddApp(oidctest.App{ClientID: client, Tenant: tenant, Secret: "load-secret", ObjectID: "load-oid"})
	ca := filepath.Join(dir, "entra-ca.pem")
	token, err := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: server, OID: "load-oid"})
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(dir, "token")
	for path, data := range map[string]string{ca: string(entra.CA.CertPEM()), tokenFile: token} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			return err
		}
	}
	spn := []string{"token", "-login", "spn", "-server-id", server, "-tenant-id", tenant, "-client-id", client,
		"-authority-host", entra.AuthorityHost(), "-authority-ca", ca}
	command := []string{"token", "-token-command", "cat " + tokenFile}
	plugin := func(args ...string) (time.Duration, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "AZURE_CLIENT_SECRET=load-secret")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("proxy %v: %v: %s", args, err, out)
		}
		return time.Since(start), nil
	}
	cases := []struct {
		name string
		args []string
	}{
		{"spn sign-in, cached on disk", append(spn, "-token-cache-dir", filepath.Join(dir, "cache"))},
		{"spn sign-in, no cache", append(spn, "-no-token-cache")},
		{"token command, cached on disk", append(command, "-token-cache-dir", filepath.Join(dir, "cache"))},
		{"token command, no cache", append(command, "-no-token-cache")},
	}
	times := make([][]time.Duration, len(cases))
	before := entra.TokenRequests("client_credentials")
	for range o.runs {
		for i, c := range cases {
			d, err := plugin(c.args...)
			if err != nil {
				return err
			}
			times[i] = append(times[i], d)
		}
	}
	fmt.Printf("proxy token, %d runs each, interleaved (one process per kubectl call):\n", o.runs)
	for i, c := range cases {
		fmt.Printf("  %-32s p50 %s, p90 %s\n", c.name, pct(times[i], 50).Round(100*time.Microsecond), pct(times[i], 90).Round(100*time.Microsecond))
	}
	fmt.Printf("  sign-ins at the stand-in: %d (the uncached runs, and the first cached one)\n", entra.TokenRequests("client_credentials")-before)

	// Many kubectl calls at once on an empty cache.
	before = entra.TokenRequests("client_credentials")
	cache := filepath.Join(dir, "cold")
	var wg sync.WaitGroup
	errs := make(chan error, o.concurrent)
	start := time.Now()
	for range o.concurrent {
		wg.Go(func() {
			if _, err := plugin(append(spn, "-token-cache-dir", cache)...); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	fmt.Printf("%d plugin processes at once on an empty cache: %d sign-in(s), all done in %s\n",
		o.concurrent, entra.TokenRequests("client_credentials")-before, time.Since(start).Round(time.Millisecond))
	return nil
}
