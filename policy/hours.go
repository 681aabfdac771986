package policy

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rickar/cal/v2/jp"
)

// Schedule is a compiled working-hours schedule (執務時間); safe for
// concurrent use.
type Schedule struct {
	enabled bool
	loc     *time.Location
	// weekly[d] are the opening windows of weekday d, in minutes after
	// midnight.
	weekly      [7][]span
	first       span // ExtraOpen days use the first window's hours
	hasFirst    bool
	holidays    bool
	closing     map[[2]int]bool // month, day
	extraOpen   map[civil]bool
	extraClosed map[civil]bool

	mu    sync.Mutex
	years map[int]map[civil]bool // public holidays by year, computed once
}

type span struct{ open, close int }

type civil struct {
	y int
	m time.Month
	d int
}

func dateOf(t time.Time) civil { y, m, d := t.Date(); return civil{y, m, d} }

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// NewSchedule compiles and validates c.
func NewSchedule(c HoursConfig) (*Schedule, error) {
	zone := c.TimeZone
	if zone == "" {
		zone = "Asia/Tokyo"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, fmt.Errorf("time_zone %q: %v", zone, err)
	}
	s := &Schedule{enabled: c.Enabled, loc: loc, holidays: c.PublicHolidays, closing: map[[2]int]bool{},
		extraOpen: map[civil]bool{}, extraClosed: map[civil]bool{}, years: map[int]map[civil]bool{}}
	for i, w := range c.Weekly {
		open, err := clock(w.Open)
		if err != nil {
			return nil, fmt.Errorf("weekly[%d].open: %v", i, err)
		}
		closeAt, err := clock(w.Close)
		if err != nil {
			return nil, fmt.Errorf("weekly[%d].close: %v", i, err)
		}
		if closeAt <= open {
			return nil, fmt.Errorf("weekly[%d]: close %s must be after open %s", i, w.Close, w.Open)
		}
		if len(w.Days) == 0 {
			return nil, fmt.Errorf("weekly[%d]: days must list at least one of mon…sun", i)
		}
		for _, d := range w.Days {
			wd, ok := weekdays[d]
			if !ok {
				return nil, fmt.Errorf("weekly[%d]: day %q must be one of mon, tue, wed, thu, fri, sat, sun", i, d)
			}
			s.weekly[wd] = append(s.weekly[wd], span{open, closeAt})
		}
		if !s.hasFirst {
			s.first, s.hasFirst = span{open, closeAt}, true
		}
	}
	for _, md := range c.ClosingDays {
		t, err := time.Parse("01-02", md)
		if err != nil {
			return nil, fmt.Errorf("closing_days: %q must be MM-DD", md)
		}
		s.closing[[2]int{int(t.Month()), t.Day()}] = true
	}
	for _, set := range []struct {
		name  string
		dates []string
		into  map[civil]bool
	}{{"extra_open", c.ExtraOpen, s.extraOpen}, {"extra_closed", c.ExtraClosed, s.extraClosed}} {
		for _, d := range set.dates {
			t, err := time.Parse("2006-01-02", d)
			if err != nil {
				return nil, fmt.Errorf("%s: %q must be YYYY-MM-DD", set.name, d)
			}
			set.into[dateOf(t)] = true
		}
	}
	return s, nil
}

// clock parses HH:MM (00:00–24:00) into minutes after midnight.
func clock(v string) (int, error) {
	h, m, ok := strings.Cut(v, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || len(h) != 2 || len(m) != 2 || err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q must be HH:MM between 00:00 and 24:00", v)
	}
	return hh*60 + mm, nil
}

// Location is the schedule's time zone.
func (s *Schedule) Location() *time.Location { return s.loc }

// Open reports whether t falls in working hours; always true when the
// schedule is not enabled.
func (s *Schedule) Open(t time.Time) bool {
	if !s.enabled {
		return true
	}
	t = t.In(s.loc)
	minute := t.Hour()*60 + t.Minute()
	for _, w := range s.windows(dateOf(t), t.Weekday()) {
		if w.open <= minute && minute < w.close {
			return true
		}
	}
	return false
}

// windows are the opening windows of one local date.
func (s *Schedule) windows(d civil, wd time.Weekday) []span {
	switch {
	case s.extraClosed[d]:
		return nil
	case s.extraOpen[d]:
		if s.hasFirst {
			return []span{s.first}
		}
		return nil
	case s.closing[[2]int{int(d.m), d.d}], s.holidays && s.isHoliday(d):
		return nil
	}
	return s.weekly[wd]
}

// isHoliday reports whether d is a Japanese public holiday.
func (s *Schedule) isHoliday(d civil) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	days, ok := s.years[d.y]
	if !ok {
		days = map[civil]bool{}
		actual := map[civil]bool{}
		for _, h := range jp.Holidays {
			a, observed := h.Calc(d.y)
			if !a.IsZero() {
				actual[dateOf(a)] = true
				days[dateOf(a)] = true
			}
			if !observed.IsZero() {
				days[dateOf(observed)] = true // 振替休日
			}
		}
		// 国民の休日: a weekday between two public holidays.
		for day := time.Date(d.y, 1, 2, 0, 0, 0, 0, time.UTC); day.Year() == d.y; day = day.AddDate(0, 0, 1) {
			if !actual[dateOf(day)] && actual[dateOf(day.AddDate(0, 0, -1))] && actual[dateOf(day.AddDate(0, 0, 1))] {
				days[dateOf(day)] = true
			}
		}
		s.years[d.y] = days
	}
	return days[d]
}

// NextOpen returns the next moment at or after t that is in working hours:
// t itself when open now; ok is false when nothing opens within 400 days.
func (s *Schedule) NextOpen(t time.Time) (next time.Time, ok bool) {
	if s.Open(t) {
		return t, true
	}
	local := t.In(s.loc)
	y, m, d := local.Date()
	for i := 0; i <= 400; i++ {
		day := time.Date(y, m, d+i, 0, 0, 0, 0, s.loc)
		best := time.Time{}
		for _, w := range s.windows(dateOf(day), day.Weekday()) {
			start := time.Date(day.Year(), day.Month(), day.Day(), w.open/60, w.open%60, 0, 0, s.loc)
			if start.Before(t) {
				continue
			}
			if best.IsZero() || start.Before(best) {
				best = start
			}
		}
		if !best.IsZero() {
			return best, true
		}
	}
	return time.Time{}, false
}
