package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

const keygenUsage = `Usage: agent keygen -cluster-id ID [flags]

Makes a key pair for an agent that signs assertions (-key-file, the
chart's credential.type=key) instead of holding a shared secret. Prints
the private key as a Kubernetes Secret on stdout, under the key the chart
and deploy.yaml read ("credential"), and the relay's agents-file entry for
the public key on stderr:

  agent keygen -cluster-id edge-7 | kubectl apply -n clusterconnect -f -

The private key never leaves the Secret; the relay needs only the public
key. The key is ECDSA P-256.

Flags:
`

// secretKey is the key the agent's credential is kept under in its
// Secret, by the chart and deploy.yaml alike.
const secretKey = "credential"

func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), keygenUsage); fs.PrintDefaults() }
	clusterID := fs.String("cluster-id", "", "the cluster's ID at the relay (required)")
	name := fs.String("secret-name", "agent-credential", "the Secret's name")
	namespace := fs.String("namespace", "", "the Secret's namespace (default: kubectl's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("keygen takes no arguments, got %q", fs.Args())
	}
	if *clusterID == "" {
		return errors.New("keygen: -cluster-id is required (see -h)")
	}
	if err := tunnel.ValidateClusterID(*clusterID); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	private, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	public, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	privatePEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: private})
	publicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: public})

	var b strings.Builder
	fmt.Fprintf(&b, "# The agent's private key for cluster %s (agent -key-file; chart: credential.type=key, credential.existingSecret=%s).\n", *clusterID, *name)
	b.WriteString("apiVersion: v1\nkind: Secret\nmetadata:\n")
	fmt.Fprintf(&b, "  name: %s\n", *name)
	if *namespace != "" {
		fmt.Fprintf(&b, "  namespace: %s\n", *namespace)
	}
	b.WriteString("  labels:\n    app.kubernetes.io/part-of: clusterconnect\ntype: Opaque\nstringData:\n")
	fmt.Fprintf(&b, "  %s: |\n", secretKey)
	for _, line := range strings.SplitAfter(strings.TrimSuffix(string(privatePEM), "\n"), "\n") {
		b.WriteString("    " + line)
	}
	b.WriteString("\n")
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return err
	}

	entry, err := json.MarshalIndent(map[string]any{
		"clusters": map[string]any{*clusterID: map[string]any{"publicKeys": []string{string(publicPEM)}}},
	}, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stderr, "The relay's agents file (-agents) needs cluster %s's public key; merge this into it:\n%s\n", *clusterID, entry)
	return err
}

// keygenCommand runs keygen as the agent binary's subcommand.
func keygenCommand(args []string, stdout, stderr io.Writer) error {
	err := keygen(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
