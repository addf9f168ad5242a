package httpx

import "sync"

// Buffers are copy buffers for httputil.ReverseProxy.BufferPool, reused
// instead of the 32 KiB a ReverseProxy without a pool allocates for every
// request.
var Buffers = &bufferPool{sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
