package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procStats reads a process's memory and CPU from /proc (Linux).
type procStats struct{ pid int }

// clockTick is USER_HZ, 100 on every Linux machine this runs on.
const clockTick = 100

// memKiB returns the resident set (VmRSS) and its peak so far (VmHWM).
func (p procStats) memKiB() (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rss, hwm, nil
}

// cpu returns the process's user+system CPU time so far.
func (p procStats) cpu() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields start after its ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", p.pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", p.pid)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// peakSampler tracks the highest VmRSS seen while running; VmHWM alone
// cannot be reset between scenarios.
type peakSampler struct {
	stop chan struct{}
	done chan int64
}

func (p procStats) samplePeak(every time.Duration) *peakSampler {
	s := &peakSampler{stop: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if rss, _, err := p.memKiB(); err == nil && rss > peak {
				peak = rss
			}
			select {
			case <-s.stop:
				s.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peak RSS in KiB.
func (s *peakSampler) Stop() int64 {
	close(s.stop)
	return <-s.done
}
