package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/policy"
)

// transport carries gomatrixserverlib's matrix://server/path requests to
// the server's federation listener: it asks the allow-list first (a
// server off it is never contacted, not even looked up), finds the server
// (the config's static peers, then .well-known and SRV when discovery is
// on) and speaks HTTPS with the system's CAs plus the configured bundle.
type transport struct {
	peers     map[string]string
	discovery bool
	roots     *x509.CertPool
	allow     func(ctx context.Context, server string) *policy.Denial

	mu         sync.Mutex
	transports map[string]*http.Transport // by TLS server name
	resolved   map[string]resolution
}

type resolution struct {
	results []fclient.ResolutionResult
	expires time.Time
}

const resolutionTTL = time.Hour

// errNoRoute says a server can't be found: not a peer, and discovery off
// or without an answer.
var errNoRoute = errors.New("no address known for server")

func newTransport(peers map[string]string, discovery bool, caBundle string, allow func(context.Context, string) *policy.Denial) (*transport, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if caBundle != "" {
		pem, err := os.ReadFile(caBundle)
		if err != nil {
			return nil, fmt.Errorf("read federation CA bundle: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("federation CA bundle %s holds no PEM certificate", caBundle)
		}
	}
	lower := make(map[string]string, len(peers))
	for name, addr := range peers {
		lower[strings.ToLower(name)] = addr
	}
	return &transport{peers: lower, discovery: discovery, roots: roots, allow: allow,
		transports: map[string]*http.Transport{}, resolved: map[string]resolution{}}, nil
}

// RoundTrip implements http.RoundTripper for matrix:// URLs.
func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	server := r.URL.Host
	if d := t.allow(r.Context(), server); d != nil {
		return nil, d
	}
	results, err := t.resolve(r.Context(), server)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, res := range results {
		out := r.Clone(r.Context())
		out.URL.Scheme = "https"
		out.URL.Host = res.Destination
		out.Host = string(res.Host)
		if r.GetBody != nil {
			if out.Body, err = r.GetBody(); err != nil {
				return nil, err
			}
		}
		resp, err := t.tlsTransport(res.TLSServerName).RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	t.mu.Lock()
	delete(t.resolved, server) // look again next time
	t.mu.Unlock()
	return nil, fmt.Errorf("reach %s: %w", server, lastErr)
}

func (t *transport) resolve(ctx context.Context, server string) ([]fclient.ResolutionResult, error) {
	if addr, ok := t.peers[strings.ToLower(server)]; ok {
		host := server
		if h, _, err := net.SplitHostPort(server); err == nil {
			host = h
		}
		return []fclient.ResolutionResult{{Destination: addr, Host: spec.ServerName(server), TLSServerName: host}}, nil
	}
	if !t.discovery {
		return nil, fmt.Errorf("%w %s: not in federation.peers, and discovery is off", errNoRoute, server)
	}
	t.mu.Lock()
	cached, ok := t.resolved[server]
	t.mu.Unlock()
	if ok && time.Now().Before(cached.expires) {
		return cached.results, nil
	}
	results, err := fclient.ResolveServer(ctx, spec.ServerName(server))
	if err != nil || len(results) == 0 {
		return nil, fmt.Errorf("%w %s: %v", errNoRoute, server, err)
	}
	t.mu.Lock()
	t.resolved[server] = resolution{results: results, expires: time.Now().Add(resolutionTTL)}
	t.mu.Unlock()
	return results, nil
}

// tlsTransport is the connection pool for one TLS server name (the name
// a certificate must show is per connection, so per transport).
func (t *transport) tlsTransport(serverName string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr, ok := t.transports[serverName]
	if !ok {
		tr = &http.Transport{
			TLSClientConfig:     &tls.Config{ServerName: serverName, RootCAs: t.roots, MinVersion: tls.VersionTLS12},
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		}
		t.transports[serverName] = tr
	}
	return tr
}

func (t *transport) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.transports {
		tr.CloseIdleConnections()
	}
}
