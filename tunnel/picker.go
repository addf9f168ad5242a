package tunnel

import (
	"math/rand/v2"
	"slices"
)

// A Picker chooses where the relay sends a request: which of a cluster's
// tunnel connections, and in a fleet which replica holding the cluster.
// RelayConfig.Picker; nil keeps the relay's own choice, which costs
// nothing per request: connections in turn (after a failed attempt, a
// connection of another agent replica first) and a random holder first,
// then the others in turn. A Picker is called for every request,
// concurrently; it must not block.
type Picker interface {
	// PickConn returns the order in which to try the cluster's
	// connections, as indexes into conns; connections it leaves out are
	// not tried. After a failed attempt failed is the connection it
	// failed on, which is not tried again; otherwise nil.
	PickConn(clusterID string, conns []ConnInfo, failed *ConnInfo) []int
	// PickHolders returns the order in which to try the replicas holding
	// the cluster, by peer address; holders it leaves out are not tried.
	PickHolders(clusterID string, holders []string) []string
}

// pickCustom reserves a stream on a connection p chose, in p's order.
func pickCustom(p Picker, clusterID string, conns []*agentConn, failed *agentConn) *agentConn {
	infos := make([]ConnInfo, len(conns))
	var failedInfo *ConnInfo
	for i, c := range conns {
		infos[i] = c.info()
		if c == failed {
			failedInfo = &infos[i]
		}
	}
	for _, i := range p.PickConn(clusterID, infos, failedInfo) {
		if i >= 0 && i < len(conns) && conns[i] != failed && conns[i].cc.ReserveNewRequest() {
			return conns[i]
		}
	}
	return nil
}

// orderHolders is the order in which to try the replicas holding id:
// order[(start+i)%len(order)] for each i, so that the relay's own choice
// (a random first, then the others in turn) copies nothing.
func (r *Relay) orderHolders(id string, holders []string) (order []string, start int) {
	if p := r.cfg.Picker; p != nil {
		return p.PickHolders(id, slices.Clone(holders)), 0
	}
	return holders, rand.IntN(len(holders))
}
