package clientapi

import (
	"net/http"
	"sync"
	"time"

	"github.com/machi-chat/machi/internal/config"
)

// rateLimiter is a token bucket per key (user ID, or IP before login).
type rateLimiter struct {
	cfg     config.RateLimits
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(cfg config.RateLimits) *rateLimiter {
	return &rateLimiter{cfg: cfg, buckets: map[string]*bucket{}, swept: time.Now()}
}

// allow takes a token for key, or returns M_LIMIT_EXCEEDED with the wait.
func (l *rateLimiter) allow(key string) error {
	if !l.cfg.Enabled {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// Full buckets carry no information: drop them.
		for k, b := range l.buckets {
			if now.Sub(b.last).Seconds()*l.cfg.PerSecond >= float64(l.cfg.Burst) {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: float64(l.cfg.Burst), last: now}
		l.buckets[key] = b
	}
	b.tokens = min(float64(l.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*l.cfg.PerSecond)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return nil
	}
	wait := time.Duration((1 - b.tokens) / l.cfg.PerSecond * float64(time.Second))
	e := newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "too many requests")
	e.Extra = map[string]any{"retry_after_ms": wait.Milliseconds() + 1}
	return e
}

// nonces are single-use shared-secret registration nonces, valid a minute.
type nonces struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (n *nonces) issue() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string]time.Time{}
	}
	now := time.Now()
	for k, t := range n.m {
		if now.Sub(t) > time.Minute {
			delete(n.m, k)
		}
	}
	nonce := randomToken(16)
	n.m[nonce] = now
	return nonce
}

func (n *nonces) use(nonce string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.m[nonce]
	delete(n.m, nonce)
	return ok && time.Since(t) <= time.Minute
}
