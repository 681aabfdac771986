// Package recent remembers the most recent keys seen (transaction IDs,
// message IDs), so that a retried request is recognised and not acted on
// twice. It is bounded: the oldest keys are forgotten first.
package recent

import "sync"

// Set is a bounded set of recently seen keys. The zero value is not usable;
// make one with New.
type Set struct {
	mu    sync.Mutex
	max   int
	seen  map[string]struct{}
	order []string
}

// New returns a set that remembers up to max keys.
func New(max int) *Set { return &Set{max: max, seen: map[string]struct{}{}} }

// First reports whether key is new, and remembers it.
func (s *Set) First(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[key]; ok {
		return false
	}
	s.seen[key] = struct{}{}
	s.order = append(s.order, key)
	if len(s.order) > s.max {
		delete(s.seen, s.order[0])
		s.order = s.order[1:]
	}
	return true
}

// Forget drops key (the action it stood for failed and may be retried).
func (s *Set) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, key)
}
