package policy

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rickar/cal/v2"
	"github.com/rickar/cal/v2/jp"
)

// nextOpenDays is how far ahead NextOpen looks for an opening.
const nextOpenDays = 400

// Schedule is a compiled working-hours schedule (執務時間); safe for
// concurrent use. It never changes once NewSchedule has returned it.
type Schedule struct {
	enabled        bool
	loc            *time.Location
	publicHolidays bool
	// weekly[d] are the windows of weekday d.
	weekly [7][]span
	// extraOpen are the windows of an ExtraOpen date: the first weekly
	// window's hours, or none when there is no weekly window.
	extraOpen []span
	// closing[m] has bit d set when MM-DD m/d is a closing day.
	closing     monthDays
	openDates   map[civil]struct{} // ExtraOpen
	closedDates map[civil]struct{} // ExtraClosed
}

// span is a window's hours in minutes after local midnight, close exclusive.
type span struct{ open, close int }

// civil is a local calendar date.
type civil struct {
	y int
	m time.Month
	d int
}

func dateOf(t time.Time) civil {
	y, m, d := t.Date()
	return civil{y, m, d}
}

// monthDays is a set of month/day pairs: bit d of [m] is m/d.
type monthDays [13]uint32

func (s *monthDays) add(m time.Month, d int) { s[m] |= 1 << d }

func (s *monthDays) has(m time.Month, d int) bool { return s[m]&(1<<d) != 0 }

var weekdayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// NewSchedule compiles c, reporting every invalid value in it, also when c
// is not enabled: a TimeZone time.LoadLocation does not know (empty is
// Asia/Tokyo), days other than mon…sun, hours not HH:MM from 00:00 to 24:00
// or closing no later than they open, ClosingDays not MM-DD, and ExtraOpen
// or ExtraClosed dates not YYYY-MM-DD.
func NewSchedule(c HoursConfig) (*Schedule, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	zone := c.TimeZone
	if zone == "" {
		zone = "Asia/Tokyo"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		bad("time_zone %q: %v", zone, err)
	}
	s := &Schedule{
		enabled:        c.Enabled,
		loc:            loc,
		publicHolidays: c.PublicHolidays,
		openDates:      map[civil]struct{}{},
		closedDates:    map[civil]struct{}{},
	}
	for i, w := range c.Weekly {
		sp, err := parseWindow(w)
		if err != nil {
			bad("weekly[%d]: %v", i, err)
		} else if i == 0 {
			s.extraOpen = []span{sp}
		}
		for _, name := range w.Days {
			wd, ok := weekdayNames[name]
			if !ok {
				bad("weekly[%d].days: %q is not one of mon, tue, wed, thu, fri, sat, sun", i, name)
			} else if err == nil {
				s.weekly[wd] = append(s.weekly[wd], sp)
			}
		}
	}
	for _, v := range c.ClosingDays {
		t, err := time.Parse("01-02", v) // year 0 is a leap year: 02-29 is valid
		if err != nil {
			bad("closing_days: %q is not a date MM-DD", v)
			continue
		}
		s.closing.add(t.Month(), t.Day())
	}
	parseDates(c.ExtraOpen, "extra_open", s.openDates, bad)
	parseDates(c.ExtraClosed, "extra_closed", s.closedDates, bad)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// parseWindow checks a window's hours and days list.
func parseWindow(w Window) (span, error) {
	open, err := parseClock(w.Open)
	if err != nil {
		return span{}, fmt.Errorf("open: %w", err)
	}
	closeAt, err := parseClock(w.Close)
	if err != nil {
		return span{}, fmt.Errorf("close: %w", err)
	}
	if closeAt <= open {
		return span{}, fmt.Errorf("close %q is not after open %q", w.Close, w.Open)
	}
	if len(w.Days) == 0 {
		return span{}, errors.New("days must list at least one of mon, tue, wed, thu, fri, sat, sun")
	}
	return span{open, closeAt}, nil
}

// parseClock parses HH:MM, 00:00 to 24:00, into minutes after midnight.
func parseClock(v string) (int, error) {
	if len(v) != 5 || v[2] != ':' || !isDigits(v[:2]) || !isDigits(v[3:]) {
		return 0, fmt.Errorf("%q is not a time HH:MM", v)
	}
	h := int(v[0]-'0')*10 + int(v[1]-'0')
	m := int(v[3]-'0')*10 + int(v[4]-'0')
	if m > 59 || h > 24 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("%q is not a time between 00:00 and 24:00", v)
	}
	return h*60 + m, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseDates adds the YYYY-MM-DD dates in vs to into.
func parseDates(vs []string, field string, into map[civil]struct{}, bad func(string, ...any)) {
	for _, v := range vs {
		t, err := time.Parse(time.DateOnly, v)
		if err != nil {
			bad("%s: %q is not a date YYYY-MM-DD", field, v)
			continue
		}
		into[dateOf(t)] = struct{}{}
	}
}

// Location is the schedule's time zone.
func (s *Schedule) Location() *time.Location { return s.loc }

// Open reports whether t falls in working hours, judged by the local date
// and wall clock of t in the schedule's time zone. It is always true when
// the schedule is not enabled.
func (s *Schedule) Open(t time.Time) bool {
	if !s.enabled {
		return true
	}
	t = t.In(s.loc)
	h, m, _ := t.Clock()
	return inWindow(s.windows(dateOf(t), t.Weekday()), h*60+m)
}

func inWindow(ws []span, minute int) bool {
	for _, w := range ws {
		if w.open <= minute && minute < w.close {
			return true
		}
	}
	return false
}

// windows are the opening windows of local date d, which is weekday wd.
func (s *Schedule) windows(d civil, wd time.Weekday) []span {
	if _, ok := s.closedDates[d]; ok {
		return nil
	}
	if _, ok := s.openDates[d]; ok {
		return s.extraOpen
	}
	ws := s.weekly[wd]
	if len(ws) == 0 || s.closing.has(d.m, d.d) || (s.publicHolidays && isPublicHoliday(d)) {
		return nil
	}
	return ws
}

// NextOpen returns the earliest moment at or after t in working hours: t
// itself when Open(t), else the start of the next window, in the schedule's
// time zone. ok is false when nothing opens within 400 days.
func (s *Schedule) NextOpen(t time.Time) (next time.Time, ok bool) {
	if s.Open(t) {
		return t, true
	}
	y, m, d := t.In(s.loc).Date()
	for i := 0; i <= nextOpenDays; i++ {
		// Noon is never skipped by a DST change, unlike midnight in a few
		// zones, so the date and weekday are right.
		day := time.Date(y, m, d+i, 12, 0, 0, 0, s.loc)
		date := dateOf(day)
		for _, w := range s.windows(date, day.Weekday()) {
			for _, start := range s.openings(date, w.open) {
				if !start.Before(t) && s.Open(start) && (next.IsZero() || start.Before(next)) {
					next = start
				}
			}
		}
		if !next.IsZero() {
			return next, true
		}
	}
	return time.Time{}, false
}

// openings are the instants at which a window opening at minute open opens
// on local date d: when the clock shows open, which happens twice when the
// clocks go back over it, or when the clocks jump over it, at the jump.
func (s *Schedule) openings(d civil, open int) []time.Time {
	t := time.Date(d.y, d.m, d.d, open/60, open%60, 0, 0, s.loc)
	if dateOf(t) != d { // the zone skipped the whole day
		return []time.Time{t}
	}
	h, m, _ := t.Clock()
	begin, end := t.ZoneBounds()
	switch clock := h*60 + m; {
	case clock > open && !begin.IsZero() && dateOf(begin) == d:
		return []time.Time{begin} // time.Date moved t past the jump
	case clock < open && !end.IsZero() && dateOf(end) == d:
		return []time.Time{end} // time.Date moved t before the jump
	case clock == open && !begin.IsZero():
		_, offset := t.Zone()
		_, before := begin.Add(-time.Second).Zone()
		earlier := t.Add(-time.Duration(before-offset) * time.Second)
		if before > offset && earlier.Before(begin) {
			return []time.Time{earlier, t}
		}
	}
	return []time.Time{t}
}

// Japanese public holidays (国民の祝日に関する法律), by year. The table is
// computed once per year and shared by all schedules: an immutable map,
// replaced under mu, so lookups take no lock. Computing also holds mu
// because some jp holiday functions write to their shared *cal.Holiday.
var holidays struct {
	mu    sync.Mutex
	years atomic.Pointer[map[int]*monthDays]
}

// isPublicHoliday reports whether d is a 国民の祝日, 振替休日 or 国民の休日.
func isPublicHoliday(d civil) bool {
	if years := holidays.years.Load(); years != nil {
		if days, ok := (*years)[d.y]; ok {
			return days.has(d.m, d.d)
		}
	}
	return holidayYear(d.y).has(d.m, d.d)
}

// holidayYear computes and caches the holidays of year y.
func holidayYear(y int) *monthDays {
	holidays.mu.Lock()
	defer holidays.mu.Unlock()
	old := holidays.years.Load()
	if old != nil {
		if days, ok := (*old)[y]; ok {
			return days
		}
	}
	days := computeHolidays(y)
	years := map[int]*monthDays{y: days}
	if old != nil {
		for k, v := range *old {
			years[k] = v
		}
	}
	holidays.years.Store(&years)
	return days
}

// kokuminNoKyujitsu are the jp.Holidays entries that are 国民の休日 rather
// than 祝日; computeHolidays derives those days itself, for every year.
var kokuminNoKyujitsu = map[*cal.Holiday]bool{
	jp.NationalHolidayBetweenRespectForTheAgedDayAndAutumnalEquinoxDay:              true,
	jp.NationalHolidayBetweenShowaDayAndNewEmperorEnthronementDay:                   true,
	jp.NationalHolidayBetweenTheNewEmperorEnthronementDayAndConstitutionMemorialDay: true,
}

// computeHolidays returns the days off of year y: the 国民の祝日 as rickar/cal
// dates them, and the 休日 the law adds to them (article 3).
func computeHolidays(y int) *monthDays {
	// The 祝日 of y and of the years either side, so that the rules below
	// also work across the turn of the year.
	shuku := map[civil]bool{}
	for _, year := range []int{y - 1, y, y + 1} {
		for _, h := range jp.Holidays {
			if kokuminNoKyujitsu[h] {
				continue
			}
			if actual, _ := h.Calc(year); !actual.IsZero() {
				shuku[dateOf(actual)] = true
			}
		}
	}
	days := &monthDays{}
	for day := time.Date(y, time.January, 1, 12, 0, 0, 0, time.UTC); day.Year() == y; day = day.AddDate(0, 0, 1) {
		if isDayOff(day, shuku) {
			days.add(day.Month(), day.Day())
		}
	}
	return days
}

// isDayOff applies article 3 of the law to day (a noon UTC) given the 祝日.
func isDayOff(day time.Time, shuku map[civil]bool) bool {
	prev, next := day.AddDate(0, 0, -1), day.AddDate(0, 0, 1)
	switch {
	case shuku[dateOf(day)]:
		return true
	case shuku[dateOf(prev)] && shuku[dateOf(next)]:
		// 3(3) 国民の休日: a day between two 祝日.
		return true
	}
	// 3(2) 振替休日: the first day after a 祝日 falling on a Sunday that is
	// not itself a 祝日, i.e. day ends a run of 祝日 starting on a Sunday.
	for d := prev; shuku[dateOf(d)]; d = d.AddDate(0, 0, -1) {
		if d.Weekday() == time.Sunday {
			return true
		}
	}
	return false
}
