// Package etcddir keeps a relay fleet's directory in etcd: which replica
// holds tunnel connections for which cluster. It implements
// tunnel.Directory.
//
// Each replica holds one lease (DefaultTTL, kept alive) and writes,
// attached to it, a key for itself and one per cluster it holds
// connections for:
//
//	<prefix>replicas/<replica ID>             = <replica's peer address>
//	<prefix>clusters/<cluster ID>/<replica ID> = <replica's peer address>
//
// A watch on the prefix feeds every replica's view, from which the relay
// answers without waiting on etcd. A replica that dies takes its keys with
// its lease; one that stops (its Run's context ends) revokes the lease, so
// the others stop sending it requests at once. While etcd cannot be
// reached the view stays as it was: replicas serve their own clusters and
// forward with what they last knew, and write their keys again on a new
// lease when etcd returns.
//
//	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints})
//	…
//	dir, err := etcddir.New(&etcddir.Config{Client: cli, ReplicaID: "relay-0", PeerAddr: "10.0.0.5:8444"})
//	…
//	go dir.Run(ctx)
//	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{Directory: dir, PeerTLSConfig: peerTLS, …})
//
// Each cluster's first connection costs one write (a put in a
// transaction), its last one another (a delete); writes go in
// transactions of up to 128 operations when many change at once.
package etcddir
