package policy

import (
	"strings"
	"testing"
	"time"
)

func mustSchedule(t *testing.T, edit func(*HoursConfig)) *Schedule {
	t.Helper()
	c := DefaultConfig().WorkingHours
	if edit != nil {
		edit(&c)
	}
	s, err := NewSchedule(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func at(y int, m time.Month, d, hh, mm, ss int) time.Time {
	return time.Date(y, m, d, hh, mm, ss, 0, jst)
}

func TestScheduleOpen(t *testing.T) {
	s := mustSchedule(t, nil)
	for _, tc := range []struct {
		name string
		t    time.Time
		want bool
	}{
		{"Wednesday 10:00", at(2026, 11, 25, 10, 0, 0), true},
		{"just before opening", at(2026, 11, 25, 8, 29, 59), false},
		{"opening", at(2026, 11, 25, 8, 30, 0), true},
		{"just before closing", at(2026, 11, 25, 17, 14, 59), true},
		{"closing", at(2026, 11, 25, 17, 15, 0), false},
		{"Saturday", at(2026, 11, 28, 10, 0, 0), false},
		{"Sunday", at(2026, 11, 29, 10, 0, 0), false},
		{"勤労感謝の日 (Monday)", at(2026, 11, 23, 10, 0, 0), false},
		{"文化の日 (Tuesday)", at(2026, 11, 3, 10, 0, 0), false},
		{"振替休日 for 憲法記念日 on a Sunday", at(2026, 5, 6, 10, 0, 0), false},
		{"国民の休日 between 敬老の日 and 秋分の日", at(2026, 9, 22, 10, 0, 0), false},
		{"年末 12/29", at(2026, 12, 29, 10, 0, 0), false},
		{"年始 1/3 (a Sunday anyway) and 1/2", at(2027, 1, 2, 10, 0, 0), false},
		{"first working day of 2027", at(2027, 1, 4, 9, 0, 0), true},
		{"UTC midnight is 09:00 JST", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), true},
		{"UTC 09:00 is 18:00 JST", time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), false},
	} {
		if got := s.Open(tc.t); got != tc.want {
			t.Errorf("%s (%s): open = %v, want %v", tc.name, tc.t, got, tc.want)
		}
	}
}

func TestScheduleNextOpen(t *testing.T) {
	s := mustSchedule(t, nil)
	for _, tc := range []struct {
		from, want time.Time
	}{
		{at(2026, 11, 27, 18, 0, 0), at(2026, 11, 30, 8, 30, 0)}, // Friday evening → Monday
		{at(2026, 11, 25, 7, 0, 0), at(2026, 11, 25, 8, 30, 0)},  // early morning → today
		{at(2026, 11, 25, 10, 0, 0), at(2026, 11, 25, 10, 0, 0)}, // open now → now
		{at(2026, 11, 20, 18, 0, 0), at(2026, 11, 24, 8, 30, 0)}, // over a holiday Monday
		{at(2026, 12, 28, 18, 0, 0), at(2027, 1, 4, 8, 30, 0)},   // over 年末年始
		{at(2026, 5, 1, 18, 0, 0), at(2026, 5, 7, 8, 30, 0)},     // over Golden Week
	} {
		got, ok := s.NextOpen(tc.from)
		if !ok || !got.Equal(tc.want) {
			t.Errorf("NextOpen(%s) = %s %v, want %s", tc.from, got, ok, tc.want)
		}
	}
	none := mustSchedule(t, func(c *HoursConfig) { c.Weekly = nil })
	if _, ok := none.NextOpen(at(2026, 11, 25, 10, 0, 0)); ok {
		t.Error("a schedule without windows opens")
	}
}

func TestScheduleExtraDatesAndDisabled(t *testing.T) {
	s := mustSchedule(t, func(c *HoursConfig) {
		c.ExtraOpen = []string{"2026-11-28"}   // an election Saturday
		c.ExtraClosed = []string{"2026-11-25"} // a closed Wednesday
	})
	if !s.Open(at(2026, 11, 28, 9, 0, 0)) || s.Open(at(2026, 11, 28, 18, 0, 0)) {
		t.Error("extra open day does not use the first window's hours")
	}
	if s.Open(at(2026, 11, 25, 10, 0, 0)) {
		t.Error("extra closed day is open")
	}
	if got, _ := s.NextOpen(at(2026, 11, 27, 18, 0, 0)); !got.Equal(at(2026, 11, 28, 8, 30, 0)) {
		t.Errorf("NextOpen before the extra open day = %s", got)
	}
	off := mustSchedule(t, func(c *HoursConfig) { c.Enabled = false })
	if !off.Open(at(2026, 11, 29, 3, 0, 0)) {
		t.Error("a disabled schedule is closed")
	}
	two := mustSchedule(t, func(c *HoursConfig) {
		c.Weekly = []Window{{Days: []string{"sat"}, Open: "09:00", Close: "12:00"}, {Days: []string{"sat"}, Open: "13:00", Close: "24:00"}}
	})
	if !two.Open(at(2026, 11, 28, 23, 59, 0)) || two.Open(at(2026, 11, 28, 12, 30, 0)) {
		t.Error("two windows on one day")
	}
	if got, _ := two.NextOpen(at(2026, 11, 28, 12, 30, 0)); !got.Equal(at(2026, 11, 28, 13, 0, 0)) {
		t.Errorf("NextOpen between windows = %s", got)
	}
}

func TestScheduleWithDST(t *testing.T) {
	s := mustSchedule(t, func(c *HoursConfig) { c.TimeZone = "Europe/Berlin"; c.PublicHolidays = false; c.ClosingDays = nil })
	berlin := s.Location()
	// 29 March 2026: clocks go from 02:00 to 03:00; Monday 30th opens at 08:30 CEST.
	got, ok := s.NextOpen(time.Date(2026, 3, 27, 18, 0, 0, 0, berlin))
	if want := time.Date(2026, 3, 30, 8, 30, 0, 0, berlin); !ok || !got.Equal(want) {
		t.Errorf("NextOpen over the DST change = %s, want %s", got, want)
	}
}

func TestScheduleValidation(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		edit       func(*HoursConfig)
	}{
		{"bad zone", "Mars/Olympus", func(c *HoursConfig) { c.TimeZone = "Mars/Olympus" }},
		{"bad day", "funday", func(c *HoursConfig) { c.Weekly[0].Days = []string{"funday"} }},
		{"no days", "days", func(c *HoursConfig) { c.Weekly[0].Days = nil }},
		{"bad open", "25:00", func(c *HoursConfig) { c.Weekly[0].Open = "25:00" }},
		{"close before open", "must be after", func(c *HoursConfig) { c.Weekly[0].Close = "08:00" }},
		{"bad closing day", "13-01", func(c *HoursConfig) { c.ClosingDays = []string{"13-01"} }},
		{"bad extra date", "2026/11/01", func(c *HoursConfig) { c.ExtraOpen = []string{"2026/11/01"} }},
	} {
		c := DefaultConfig().WorkingHours
		c.Weekly = []Window{{Days: []string{"mon"}, Open: "08:30", Close: "17:15"}}
		tc.edit(&c)
		if _, err := NewSchedule(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %q", tc.name, err, tc.want)
		}
	}
}

func BenchmarkScheduleOpen(b *testing.B) {
	s, _ := NewSchedule(DefaultConfig().WorkingHours)
	t := at(2026, 11, 25, 10, 0, 0)
	s.Open(t)
	b.ReportAllocs()
	for b.Loop() {
		s.Open(t)
	}
}
