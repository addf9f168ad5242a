package impersonate

import (
	"net/url"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// The API server unescapes extra keys with url.PathUnescape; every byte
// must come back, and the escaped key must be a valid header name.
func TestEscapeExtraKeyRoundTrips(t *testing.T) {
	keys := []string{"", "clusterconnect.io/oid", "plain-key", "100%", "a b\tc", "ünïcode", "scopes"}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	keys = append(keys, string(all))
	for _, k := range keys {
		esc := escapeExtraKey(k)
		if len(esc) != escapedLen(k) {
			t.Errorf("escapedLen(%q) = %d, escaped is %d long", k, escapedLen(k), len(esc))
		}
		if k != "" && !httpguts.ValidHeaderFieldName("Impersonate-Extra-"+esc) {
			t.Errorf("%q escapes to an invalid header name %q", k, esc)
		}
		back, err := url.PathUnescape(esc)
		if err != nil || back != k {
			t.Errorf("%q escapes to %q, which unescapes to %q (%v)", k, esc, back, err)
		}
	}
}
