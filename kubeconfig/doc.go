// Package kubeconfig generates kubeconfig entries that point kubectl at a
// cluster through clusterconnect, and merges and removes them the way
// client-go's clientcmd does.
//
// The package is being built: its API is not yet available.
package kubeconfig
