// Package kubeconfig writes the kubeconfig entries that point kubectl (and
// any client-go program) at a cluster through clusterconnect, in one of two
// modes:
//
//   - proxy mode ([ProxyEntry]): the server is the local client proxy,
//     https://127.0.0.1:47011 by default, as az connectedk8s proxy does; the
//     user entry carries a placeholder the proxy replaces with the real
//     token.
//   - direct mode ([DirectEntry]): the server is the relay's route for the
//     cluster, and an exec credential plugin prints the token
//     ([ExecCredential]), so no local process runs.
//
// [Merge] and [Remove] change kubeconfig files the way kubectl does: the
// file in $KUBECONFIG that has the context (else the first), or
// ~/.kube/config; entries replaced by name and everything else kept; the
// result validated with clientcmd before it is written atomically with mode
// 0600 under kubectl's lock file. A symlink is followed only to a regular
// file of the same user, and a file others can read draws a warning.
package kubeconfig
