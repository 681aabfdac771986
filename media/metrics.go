package media

import "github.com/prometheus/client_golang/prometheus"

var (
	thumbSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "machi", Name: "thumbnail_generate_seconds",
		Help:    "Time to make one thumbnail (decode, resize, encode, write), waiting for a slot included.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	})
	thumbServed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "machi", Name: "thumbnails_served_total",
		Help: "Thumbnails served, by source: cache, generated, or original.",
	}, []string{"source"})
)

// Collectors are the package's Prometheus metrics, for registration.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{thumbSeconds, thumbServed}
}
