package impersonate_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

type response struct {
	code int
	body string
}

func httpGet(t *testing.T, h http.Handler) response {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return response{rec.Code, rec.Body.String()}
}
