package tunnel

import (
	"context"
	"sync"
)

// Ending a client's request while it runs: the relay's hook for a
// ClientAuthorizer whose caller's right to a long-lived request (a watch,
// an exec, a port-forward) ends while it runs.

// EndRequest returns, for the context of a client's request as a
// ClientAuthorizer sees it in AuthorizeClient, a function that ends the
// request at any time until it is over, with err as the reason: the
// request's context is canceled with err as its cause (a Middleware such
// as package sessions' Watches ends a watch with an ERROR event saying
// err), and an upgraded connection's cluster side is cut, its reads
// failing with err (sessions' Upgrades puts err on an exec's error
// stream). err is most often an *AccessError. EndRequest returns nil for
// any other context.
func EndRequest(ctx context.Context) func(err error) {
	if cr, ok := ctx.Value(clientRequestKey{}).(*clientRequest); ok {
		e := &cr.ending
		e.mu.Lock()
		e.wanted = true
		e.mu.Unlock()
		return e.end
	}
	return nil
}

// ending is what EndRequest ends: a request's context and, once it is
// upgraded, its cluster side. Its context is made cancelable only for a
// request the authorizer may end (it asked EndRequest): others pay for
// the slot alone.
type ending struct {
	mu     sync.Mutex
	wanted bool // EndRequest was asked
	cancel context.CancelCauseFunc
	err    error
	up     *upgradedBody
}

// arm makes ctx, the request's, cancelable if the authorizer may end the
// request, and returns it; done releases it when the request is over.
func (e *ending) arm(ctx context.Context) (_ context.Context, done func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.wanted {
		return ctx, func() {}
	}
	ctx, e.cancel = context.WithCancelCause(ctx)
	if e.err != nil {
		e.cancel(e.err) // ended already, while it was being admitted
	}
	cancel := e.cancel
	return ctx, func() { cancel(nil) }
}

func (e *ending) end(err error) {
	e.mu.Lock()
	if e.err != nil {
		e.mu.Unlock()
		return
	}
	e.err = err
	cancel, up := e.cancel, e.up
	e.mu.Unlock()
	if cancel != nil {
		cancel(err)
	}
	if up != nil {
		up.up.abort()
	}
}

// upgraded notes the request's upgraded connection; if the request has
// already been ended, the connection is cut at once.
func (e *ending) upgraded(up *upgradedBody) {
	e.mu.Lock()
	e.up = up
	ended := e.err != nil
	e.mu.Unlock()
	up.ended = e
	if ended {
		up.up.abort()
	}
}

// reason is why the request was ended, or nil.
func (e *ending) reason() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}
