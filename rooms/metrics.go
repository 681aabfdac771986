package rooms

import "github.com/prometheus/client_golang/prometheus"

var (
	commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "machi", Name: "event_commit_seconds",
		Help:    "Time to commit one batch of room events.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	commitBatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "machi", Name: "event_commit_batch_size",
		Help:    "Events committed per transaction.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
)

// Collectors are the package's Prometheus metrics, for registration.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{commitSeconds, commitBatchSize}
}
