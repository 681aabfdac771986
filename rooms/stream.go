package rooms

import "sync"

// Stream hands out the server-wide stream positions that order everything
// /sync delivers, and tracks which of them are durable.
//
// Positions are allocated before a write and completed after it commits (or
// fails). Writes can commit out of allocation order, so Current is the
// highest position below which every position has completed: a reader that
// serves (since, Current] never skips a write that commits later.
type Stream struct {
	mu      sync.Mutex
	last    int64 // last allocated
	current int64 // every position <= current has completed
	pending map[int64]bool
}

// NewStream starts the stream after the highest persisted position.
func NewStream(persisted int64) *Stream {
	return &Stream{last: persisted, current: persisted, pending: map[int64]bool{}}
}

// Allocate reserves the next position.
func (s *Stream) Allocate() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last++
	s.pending[s.last] = false
	return s.last
}

// Complete marks positions as committed (or abandoned) and reports whether
// Current moved.
func (s *Stream) Complete(positions ...int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range positions {
		if _, ok := s.pending[p]; ok {
			s.pending[p] = true
		}
	}
	moved := false
	for {
		done, ok := s.pending[s.current+1]
		if !ok || !done {
			break
		}
		delete(s.pending, s.current+1)
		s.current++
		moved = true
	}
	return moved
}

// Current is the highest position up to which everything is durable.
func (s *Stream) Current() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}
