// Package prom holds the Prometheus pieces the servers share: a registry
// with the runtime's collectors, and its handler.
package prom

import (
	"runtime"

	"net/http"

	"github.com/clusterconnect/clusterconnect/internal/version"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry with the Go runtime and
// process collectors, for a server's own metrics and the libraries' it
// passes it to.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	return reg
}

// buildInfo is clusterconnect_build_info: 1, labelled with which build
// runs (package version), so that a dashboard can tell replicas of two
// releases apart.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "clusterconnect_build_info",
		Help:        "Which build of clusterconnect this is: always 1.",
		ConstLabels: prometheus.Labels{"version": version.String(), "revision": version.Revision(), "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// Handler serves reg in the Prometheus exposition format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
