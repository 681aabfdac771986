package policy

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// jstZone is Japan Standard Time, fixed so that the test inputs do not
// depend on the tz database (the schedules under test do).
var jstZone = time.FixedZone("JST", 9*60*60)

// jstAt is a wall clock time in Japan.
func jstAt(y int, m time.Month, d, hh, mm, ss int) time.Time {
	return time.Date(y, m, d, hh, mm, ss, 0, jstZone)
}

// newTestSchedule compiles the default working hours (Mon–Fri 08:30–17:15
// Asia/Tokyo, public holidays, 12-29…01-03 closed) after edit.
func newTestSchedule(t testing.TB, edit func(*HoursConfig)) *Schedule {
	t.Helper()
	c := DefaultConfig().WorkingHours
	if edit != nil {
		edit(&c)
	}
	s, err := NewSchedule(c)
	if err != nil {
		t.Fatalf("NewSchedule: %v", err)
	}
	return s
}

type openCase struct {
	name string
	at   time.Time
	want bool
}

func checkOpen(t *testing.T, s *Schedule, cases []openCase) {
	t.Helper()
	for _, tc := range cases {
		if got := s.Open(tc.at); got != tc.want {
			t.Errorf("%s: Open(%s) = %v, want %v", tc.name, tc.at, got, tc.want)
		}
	}
}

func TestScheduleOpen(t *testing.T) {
	checkOpen(t, newTestSchedule(t, nil), []openCase{
		{"Wednesday 10:00", jstAt(2026, 11, 25, 10, 0, 0), true},
		{"Wednesday just before opening", jstAt(2026, 11, 25, 8, 29, 59), false},
		{"Wednesday opening", jstAt(2026, 11, 25, 8, 30, 0), true},
		{"Wednesday just before closing", jstAt(2026, 11, 25, 17, 14, 59), true},
		{"Wednesday closing", jstAt(2026, 11, 25, 17, 15, 0), false},
		{"Wednesday midnight", jstAt(2026, 11, 25, 0, 0, 0), false},
		{"Saturday", jstAt(2026, 11, 28, 10, 0, 0), false},
		{"Sunday", jstAt(2026, 11, 29, 10, 0, 0), false},
		{"Monday", jstAt(2026, 11, 30, 10, 0, 0), true},
		{"勤労感謝の日 (Monday)", jstAt(2026, 11, 23, 10, 0, 0), false},
		{"文化の日 (Tuesday)", jstAt(2026, 11, 3, 10, 0, 0), false},
		{"振替休日 for 憲法記念日 on Sunday 5/3", jstAt(2026, 5, 6, 10, 0, 0), false},
		{"振替休日 for 春分の日 on Sunday 3/21", jstAt(2027, 3, 22, 10, 0, 0), false},
		{"国民の休日 between 敬老の日 and 秋分の日", jstAt(2026, 9, 22, 10, 0, 0), false},
		{"年末 12/29 (Tuesday)", jstAt(2026, 12, 29, 10, 0, 0), false},
		{"年末 12/31 (Thursday)", jstAt(2026, 12, 31, 10, 0, 0), false},
		{"年始 1/1 (Friday)", jstAt(2027, 1, 1, 10, 0, 0), false},
		{"first working day of 2027 (Monday 1/4)", jstAt(2027, 1, 4, 9, 0, 0), true},
		{"last working day of 2026 (Monday 12/28)", jstAt(2026, 12, 28, 17, 0, 0), true},
		{"00:00 UTC is 09:00 JST", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), true},
		{"09:00 UTC is 18:00 JST", time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), false},
		{"Tuesday 23:30 UTC is Wednesday 08:30 JST", time.Date(2026, 11, 24, 23, 30, 0, 0, time.UTC), true},
		{"Friday 16:00 UTC is Saturday 01:00 JST", time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC), false},
	})
}

func TestScheduleNextOpen(t *testing.T) {
	s := newTestSchedule(t, nil)
	for _, tc := range []struct {
		name     string
		from     time.Time
		want     time.Time
		wantSame bool // want is from itself, in its own zone
	}{
		{"Friday evening → Monday", jstAt(2026, 11, 27, 18, 0, 0), jstAt(2026, 11, 30, 8, 30, 0), false},
		{"Saturday → Monday", jstAt(2026, 11, 28, 10, 0, 0), jstAt(2026, 11, 30, 8, 30, 0), false},
		{"early morning → today", jstAt(2026, 11, 25, 7, 0, 0), jstAt(2026, 11, 25, 8, 30, 0), false},
		{"at closing → tomorrow", jstAt(2026, 11, 25, 17, 15, 0), jstAt(2026, 11, 26, 8, 30, 0), false},
		{"open now → now", jstAt(2026, 11, 25, 10, 0, 0), jstAt(2026, 11, 25, 10, 0, 0), true},
		{"open now in UTC → now", time.Date(2026, 11, 25, 1, 2, 3, 4, time.UTC), time.Date(2026, 11, 25, 1, 2, 3, 4, time.UTC), true},
		{"over 勤労感謝の日 Monday", jstAt(2026, 11, 20, 18, 0, 0), jstAt(2026, 11, 24, 8, 30, 0), false},
		{"over 年末年始", jstAt(2026, 12, 28, 18, 0, 0), jstAt(2027, 1, 4, 8, 30, 0), false},
		{"over Golden Week", jstAt(2026, 5, 1, 18, 0, 0), jstAt(2026, 5, 7, 8, 30, 0), false},
		{"over Silver Week", jstAt(2026, 9, 18, 18, 0, 0), jstAt(2026, 9, 24, 8, 30, 0), false},
		{"UTC input", time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC), jstAt(2026, 11, 30, 8, 30, 0), false},
	} {
		got, ok := s.NextOpen(tc.from)
		if !ok || !got.Equal(tc.want) {
			t.Errorf("%s: NextOpen(%s) = %s, %v; want %s", tc.name, tc.from, got, ok, tc.want)
			continue
		}
		if tc.wantSame && got != tc.from {
			t.Errorf("%s: NextOpen(%s) = %s, want t itself", tc.name, tc.from, got)
		}
		if !tc.wantSame && got.Location() != s.Location() {
			t.Errorf("%s: NextOpen is in %s, want the schedule's zone %s", tc.name, got.Location(), s.Location())
		}
	}
}

func TestScheduleNextOpenNever(t *testing.T) {
	for name, edit := range map[string]func(*HoursConfig){
		"no windows":     func(c *HoursConfig) { c.Weekly = nil },
		"all extra days": func(c *HoursConfig) { c.Weekly = nil; c.ExtraOpen = []string{"2026-11-28"} },
		"sundays only, all closed": func(c *HoursConfig) {
			c.Weekly = []Window{{Days: []string{"sun"}, Open: "09:00", Close: "10:00"}}
			for d := time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() == 2028; d = d.AddDate(0, 0, 1) {
				c.ClosingDays = append(c.ClosingDays, d.Format("01-02"))
			}
		},
	} {
		s := newTestSchedule(t, edit)
		if next, ok := s.NextOpen(jstAt(2026, 11, 25, 10, 0, 0)); ok || !next.IsZero() {
			t.Errorf("%s: NextOpen = %s, %v; want zero, false", name, next, ok)
		}
	}
}

func TestScheduleExtraDates(t *testing.T) {
	s := newTestSchedule(t, func(c *HoursConfig) {
		c.Weekly = append(c.Weekly, Window{Days: []string{"sat"}, Open: "13:00", Close: "15:00"})
		c.ExtraOpen = []string{"2026-11-28", "2026-11-23", "2026-12-29", "2026-11-26"}
		c.ExtraClosed = []string{"2026-11-25", "2026-11-26"}
	})
	checkOpen(t, s, []openCase{
		{"extra open Saturday before opening", jstAt(2026, 11, 28, 8, 29, 59), false},
		{"extra open Saturday opening", jstAt(2026, 11, 28, 8, 30, 0), true},
		{"extra open Saturday just before closing", jstAt(2026, 11, 28, 17, 14, 59), true},
		{"extra open Saturday closing", jstAt(2026, 11, 28, 17, 15, 0), false},
		{"ordinary Saturday uses its own window", jstAt(2026, 12, 5, 10, 0, 0), false},
		{"ordinary Saturday window", jstAt(2026, 12, 5, 14, 0, 0), true},
		{"extra open public holiday", jstAt(2026, 11, 23, 10, 0, 0), true},
		{"extra open closing day", jstAt(2026, 12, 29, 10, 0, 0), true},
		{"extra closed Wednesday", jstAt(2026, 11, 25, 10, 0, 0), false},
		{"extra closed beats extra open", jstAt(2026, 11, 26, 10, 0, 0), false},
		{"ordinary Wednesday", jstAt(2026, 12, 2, 10, 0, 0), true},
	})
	for _, tc := range []struct {
		name     string
		from, to time.Time
	}{
		{"into the extra open Saturday", jstAt(2026, 11, 27, 18, 0, 0), jstAt(2026, 11, 28, 8, 30, 0)},
		{"over the extra closed days", jstAt(2026, 11, 24, 18, 0, 0), jstAt(2026, 11, 27, 8, 30, 0)},
		{"into an extra open closing day", jstAt(2026, 12, 28, 18, 0, 0), jstAt(2026, 12, 29, 8, 30, 0)},
	} {
		if got, ok := s.NextOpen(tc.from); !ok || !got.Equal(tc.to) {
			t.Errorf("%s: NextOpen(%s) = %s, %v; want %s", tc.name, tc.from, got, ok, tc.to)
		}
	}
}

func TestScheduleSeveralWindows(t *testing.T) {
	s := newTestSchedule(t, func(c *HoursConfig) {
		c.Weekly = []Window{
			{Days: []string{"sat"}, Open: "13:00", Close: "24:00"},
			{Days: []string{"sat", "sun"}, Open: "09:00", Close: "12:00"},
		}
	})
	checkOpen(t, s, []openCase{
		{"morning window", jstAt(2026, 11, 28, 9, 0, 0), true},
		{"lunch", jstAt(2026, 11, 28, 12, 30, 0), false},
		{"afternoon window until midnight", jstAt(2026, 11, 28, 23, 59, 59), true},
		{"Sunday afternoon", jstAt(2026, 11, 29, 13, 0, 0), false},
		{"Sunday morning", jstAt(2026, 11, 29, 11, 0, 0), true},
	})
	for _, tc := range []struct {
		name     string
		from, to time.Time
	}{
		{"earliest window first", jstAt(2026, 11, 27, 18, 0, 0), jstAt(2026, 11, 28, 9, 0, 0)},
		{"between windows", jstAt(2026, 11, 28, 12, 30, 0), jstAt(2026, 11, 28, 13, 0, 0)},
		{"Sunday after closing → next Saturday", jstAt(2026, 11, 29, 12, 0, 0), jstAt(2026, 12, 5, 9, 0, 0)},
	} {
		if got, ok := s.NextOpen(tc.from); !ok || !got.Equal(tc.to) {
			t.Errorf("%s: NextOpen(%s) = %s, %v; want %s", tc.name, tc.from, got, ok, tc.to)
		}
	}
}

func TestScheduleDisabled(t *testing.T) {
	s := newTestSchedule(t, func(c *HoursConfig) { c.Enabled = false })
	for _, at := range []time.Time{
		jstAt(2026, 11, 29, 3, 0, 0),   // Sunday night
		jstAt(2026, 11, 23, 10, 0, 0),  // holiday
		jstAt(2027, 1, 1, 0, 0, 0),     // New Year
		jstAt(2026, 11, 25, 17, 15, 0), // after hours
	} {
		if !s.Open(at) {
			t.Errorf("disabled schedule: Open(%s) = false", at)
		}
		if next, ok := s.NextOpen(at); !ok || next != at {
			t.Errorf("disabled schedule: NextOpen(%s) = %s, %v; want t", at, next, ok)
		}
	}
	if _, err := NewSchedule(HoursConfig{Enabled: false, Weekly: []Window{{Days: []string{"funday"}, Open: "09:00", Close: "17:00"}}}); err == nil {
		t.Error("a disabled schedule with a bad day validates")
	}
}

func TestScheduleDST(t *testing.T) {
	sunday := func(open, close string) func(*HoursConfig) {
		return func(c *HoursConfig) {
			c.TimeZone = "Europe/Berlin"
			c.PublicHolidays = false
			c.ClosingDays = nil
			c.Weekly = append(c.Weekly, Window{Days: []string{"sun"}, Open: open, Close: close})
		}
	}
	s := newTestSchedule(t, sunday("02:30", "04:00"))
	berlin := s.Location()
	if berlin.String() != "Europe/Berlin" {
		t.Fatalf("Location() = %s", berlin)
	}
	at := func(y int, m time.Month, d, hh, mm int) time.Time { return time.Date(y, m, d, hh, mm, 0, 0, berlin) }
	utc := func(m time.Month, d, hh, mm int) time.Time { return time.Date(2026, m, d, hh, mm, 0, 0, time.UTC) }
	// 2026: clocks go forward 02:00 CET → 03:00 CEST on Sunday 29 March
	// (01:00 UTC) and back 03:00 CEST → 02:00 CET on Sunday 25 October
	// (01:00 UTC).
	checkOpen(t, s, []openCase{
		{"Monday after spring forward", at(2026, 3, 30, 8, 30), true},
		{"07:30 CEST = 08:30 CET", at(2026, 3, 30, 7, 30), false},
		{"Monday after fall back", at(2026, 10, 26, 8, 30), true},
		{"06:30 UTC is 07:30 CET", utc(10, 26, 6, 30), false},
		{"07:30 UTC is 08:30 CET", utc(10, 26, 7, 30), true},
		{"03:00 CEST, right after the jump", utc(3, 29, 1, 0), true},
		{"02:30 CEST, first time", utc(10, 25, 0, 30), true},
		{"02:30 CET, second time", utc(10, 25, 1, 30), true},
	})
	short := newTestSchedule(t, sunday("02:30", "02:40"))
	weekdays := newTestSchedule(t, func(c *HoursConfig) { sunday("02:30", "04:00")(c); c.Weekly = c.Weekly[:1] })
	for _, tc := range []struct {
		name     string
		s        *Schedule
		from, to time.Time
	}{
		{"over spring forward", weekdays, at(2026, 3, 27, 18, 0), at(2026, 3, 30, 8, 30)},
		{"over fall back", weekdays, at(2026, 10, 23, 18, 0), at(2026, 10, 26, 8, 30)},
		{"ordinary Sunday window", s, at(2026, 4, 4, 18, 0), at(2026, 4, 5, 2, 30)},
		{"a window the jump skips opens at the jump", s, at(2026, 3, 28, 18, 0), utc(3, 29, 1, 0)},
		{"a repeated opening, first time", short, at(2026, 10, 24, 18, 0), utc(10, 25, 0, 30)},
		{"a repeated opening, second time", short, utc(10, 25, 0, 45), utc(10, 25, 1, 30)},
		{"a skipped short window never opens", short, at(2026, 3, 28, 18, 0), at(2026, 3, 30, 8, 30)},
	} {
		if got, ok := tc.s.NextOpen(tc.from); !ok || !got.Equal(tc.to) {
			t.Errorf("%s: NextOpen(%s) = %s, %v; want %s", tc.name, tc.from, got, ok, tc.to)
		}
	}

	// In America/New_York, time.Date moves a skipped time back, not forward:
	// 8 March 2026, 02:00 EST → 03:00 EDT (07:00 UTC).
	ny := newTestSchedule(t, func(c *HoursConfig) {
		sunday("02:30", "04:00")(c)
		c.TimeZone = "America/New_York"
	})
	from := time.Date(2026, 3, 7, 18, 0, 0, 0, ny.Location())
	if got, ok := ny.NextOpen(from); !ok || !got.Equal(utc(3, 8, 7, 0)) {
		t.Errorf("New York: NextOpen(%s) = %s, %v; want 03:00 EDT", from, got, ok)
	}
}

func TestScheduleValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*HoursConfig)
		want string // the bad value, named in the error
	}{
		{"bad zone", func(c *HoursConfig) { c.TimeZone = "Mars/Olympus" }, `"Mars/Olympus"`},
		{"bad day", func(c *HoursConfig) { c.Weekly[0].Days = []string{"mon", "funday"} }, `"funday"`},
		{"capitalised day", func(c *HoursConfig) { c.Weekly[0].Days = []string{"Mon"} }, `"Mon"`},
		{"no days", func(c *HoursConfig) { c.Weekly[0].Days = nil }, "days"},
		{"bad open", func(c *HoursConfig) { c.Weekly[0].Open = "25:00" }, `"25:00"`},
		{"open 24:30", func(c *HoursConfig) { c.Weekly[0].Open = "24:30" }, `"24:30"`},
		{"bad minutes", func(c *HoursConfig) { c.Weekly[0].Close = "17:60" }, `"17:60"`},
		{"one-digit hour", func(c *HoursConfig) { c.Weekly[0].Open = "8:30" }, `"8:30"`},
		{"signed hour", func(c *HoursConfig) { c.Weekly[0].Open = "+8:30" }, `"+8:30"`},
		{"no colon", func(c *HoursConfig) { c.Weekly[0].Open = "0830" }, `"0830"`},
		{"empty close", func(c *HoursConfig) { c.Weekly[0].Close = "" }, `close: ""`},
		{"close before open", func(c *HoursConfig) { c.Weekly[0].Close = "08:00" }, `close "08:00" is not after open "08:30"`},
		{"close equals open", func(c *HoursConfig) { c.Weekly[0].Close = "08:30" }, `close "08:30" is not after open "08:30"`},
		{"bad closing month", func(c *HoursConfig) { c.ClosingDays = []string{"13-01"} }, `"13-01"`},
		{"bad closing day", func(c *HoursConfig) { c.ClosingDays = []string{"02-30"} }, `"02-30"`},
		{"closing day with year", func(c *HoursConfig) { c.ClosingDays = []string{"2026-12-29"} }, `"2026-12-29"`},
		{"bad extra open date", func(c *HoursConfig) { c.ExtraOpen = []string{"2026/11/01"} }, `extra_open: "2026/11/01"`},
		{"bad extra closed date", func(c *HoursConfig) { c.ExtraClosed = []string{"2026-02-29"} }, `extra_closed: "2026-02-29"`},
	} {
		c := DefaultConfig().WorkingHours
		c.Weekly = []Window{{Days: []string{"mon"}, Open: "08:30", Close: "17:15"}}
		tc.edit(&c)
		if _, err := NewSchedule(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.want)
		}
	}

	// Every problem is reported at once.
	_, err := NewSchedule(HoursConfig{TimeZone: "Nowhere/Town", ClosingDays: []string{"00-00"}, ExtraOpen: []string{"tomorrow"}})
	for _, want := range []string{"Nowhere/Town", "00-00", "tomorrow"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
}

func TestScheduleValidValues(t *testing.T) {
	s := newTestSchedule(t, func(c *HoursConfig) {
		c.TimeZone = ""
		c.Weekly = []Window{{Days: []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, Open: "00:00", Close: "24:00"}}
		c.ClosingDays = []string{"02-29", "12-31"}
		c.ExtraOpen, c.ExtraClosed = nil, nil
	})
	if got := s.Location().String(); got != "Asia/Tokyo" {
		t.Errorf("empty time_zone is %s, want Asia/Tokyo", got)
	}
	checkOpen(t, s, []openCase{
		{"00:00", jstAt(2026, 11, 28, 0, 0, 0), true},
		{"23:59:59", jstAt(2026, 11, 28, 23, 59, 59), true},
		{"closing day 02-29 in a leap year", jstAt(2028, 2, 29, 12, 0, 0), false},
		{"02-28 in a leap year", jstAt(2028, 2, 28, 12, 0, 0), true},
	})
}

// TestScheduleJapaneseHolidays checks the days off against the calendars the Cabinet
// Office (内閣府) publishes, and the law's rules in other years.
func TestScheduleJapaneseHolidays(t *testing.T) {
	published := map[int][]string{
		2026: {
			"01-01", "01-12", "02-11", "02-23", "03-20", "04-29", "05-03", "05-04", "05-05",
			"05-06", // 振替休日 (5/3 is a Sunday)
			"07-20", "08-11", "09-21",
			"09-22", // 国民の休日
			"09-23", "10-12", "11-03", "11-23",
		},
		2027: {
			"01-01", "01-11", "02-11", "02-23", "03-21",
			"03-22", // 振替休日 (3/21 is a Sunday)
			"04-29", "05-03", "05-04", "05-05", "07-19", "08-11", "09-20", "09-23", "10-11",
			"11-03", "11-23",
		},
	}
	for year, days := range published {
		want := map[string]bool{}
		for _, d := range days {
			want[d] = true
		}
		for day := time.Date(year, 1, 1, 12, 0, 0, 0, time.UTC); day.Year() == year; day = day.AddDate(0, 0, 1) {
			md := day.Format("01-02")
			if got := isPublicHoliday(dateOf(day)); got != want[md] {
				t.Errorf("%d-%s (%s): holiday = %v, want %v", year, md, day.Weekday(), got, want[md])
			}
		}
	}
	for _, tc := range []struct {
		date string
		want bool
	}{
		{"2023-01-02", true},  // 振替休日: 元日 on a Sunday
		{"2024-02-12", true},  // 振替休日: 建国記念の日 on a Sunday
		{"2025-05-06", true},  // 振替休日: みどりの日 on a Sunday, after こどもの日
		{"2019-04-30", true},  // 国民の休日 before 即位の日
		{"2019-05-02", true},  // 国民の休日 after 即位の日
		{"2032-09-21", true},  // 国民の休日
		{"2037-09-22", true},  // 国民の休日, a year rickar/cal v2.1.13 does not list
		{"2037-09-24", false}, // a plain Thursday
		{"2026-05-07", false}, // after Golden Week
		{"2026-12-29", false}, // 年末 is a closing day, not a public holiday
	} {
		day, err := time.Parse(time.DateOnly, tc.date)
		if err != nil {
			t.Fatal(err)
		}
		if got := isPublicHoliday(dateOf(day)); got != tc.want {
			t.Errorf("%s (%s): holiday = %v, want %v", tc.date, day.Weekday(), got, tc.want)
		}
	}
}

func TestScheduleConcurrent(t *testing.T) {
	s := newTestSchedule(t, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for y := 2000 + g; y < 2100; y += 8 {
				from := jstAt(y, 12, 28, 18, 0, 0)
				if next, ok := s.NextOpen(from); !ok || s.Open(from) || !s.Open(next) {
					t.Errorf("NextOpen(%s) = %s, %v", from, next, ok)
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkScheduleOpen(b *testing.B) {
	s := newTestSchedule(b, nil)
	for _, bc := range []struct {
		name string
		at   time.Time
	}{
		{"weekday", jstAt(2026, 11, 25, 10, 0, 0)},
		{"holiday", jstAt(2026, 11, 23, 10, 0, 0)},
		{"weekend", jstAt(2026, 11, 28, 10, 0, 0)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s.Open(bc.at) // warm the holiday table
			b.ReportAllocs()
			for b.Loop() {
				s.Open(bc.at)
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		at := jstAt(2026, 11, 25, 10, 0, 0)
		s.Open(at)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Open(at)
			}
		})
	})
}
