package policy



// Schedule is a compiled working-hours schedule. (Being written.)
type Schedule struct{}

// NewSchedule compiles c.
func NewSchedule(c HoursConfig) (*Schedule, error) { return &Schedule{}, nil }
