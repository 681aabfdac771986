// Command machi-bench drives a Matrix homeserver with open registration and
// measures it: closed-loop and paced senders with long-polling receivers,
// many idle long-polls with a steady trickle, and the initial sync of a
// user in many rooms. It reports throughput, send latency, send→/sync
// delivery latency (per receiver per event), initial sync time, and the
// server's RSS and CPU read from /proc when given its PID — or it starts
// machi itself (-spawn) and then also measures startup.
//
//	machi-bench -spawn ./machi                       # machi on SQLite
//	machi-bench -spawn ./machi -engine postgres -postgres-dsn postgres://…
//	machi-bench -url http://127.0.0.1:8008 -pid 1234 # any running server
//
// Every loop is bounded by count and time.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

type options struct {
	url, spawn, engine, pgDSN, jsonOut, scenarios string
	pid                                           int
	users, rooms, roomSize, senders, receivers    int
	seed, idlePolls, initialSyncs                 int
	duration                                      time.Duration
	rate, trickle                                 float64
}

// Report is the bench's JSON output.
type Report struct {
	Target  string    `json:"target"`
	Engine  string    `json:"engine,omitempty"`
	Machine string    `json:"machine"`
	When    time.Time `json:"when"`
	Options struct {
		Users     int     `json:"users"`
		Rooms     int     `json:"rooms"`
		RoomSize  int     `json:"room_size"`
		Senders   int     `json:"senders"`
		Receivers int     `json:"receivers"`
		Seed      int     `json:"seed_messages"`
		IdlePolls int     `json:"idle_polls"`
		Duration  string  `json:"duration"`
		Rate      float64 `json:"paced_rate"`
		Trickle   float64 `json:"idle_trickle_rate"`
	} `json:"options"`
	StartupFreshMS    float64          `json:"startup_fresh_ms,omitempty"`
	StartupRestartMS  float64          `json:"startup_restart_ms,omitempty"`
	IdleRSSMiB        float64          `json:"idle_rss_mib,omitempty"`
	IdleRSSRestartMiB float64          `json:"idle_rss_restart_mib,omitempty"`
	InitialSync       *InitialSync     `json:"initial_sync,omitempty"`
	Scenarios         []ScenarioResult `json:"scenarios"`
	ClientCPUSeconds  float64          `json:"client_cpu_seconds"`
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "http://127.0.0.1:8008", "homeserver base URL (ignored with -spawn)")
	flag.IntVar(&o.pid, "pid", 0, "server PID, for RSS and CPU from /proc (set by -spawn)")
	flag.StringVar(&o.spawn, "spawn", "", "path of a machi binary to start on a fresh data folder, measured from startup")
	flag.StringVar(&o.engine, "engine", "sqlite", "with -spawn: sqlite or postgres")
	flag.StringVar(&o.pgDSN, "postgres-dsn", "", "with -spawn -engine postgres: a server DSN; the bench creates and drops its own database")
	flag.StringVar(&o.jsonOut, "json", "", "write the report as JSON to this file")
	flag.StringVar(&o.scenarios, "scenarios", "initial,closed,paced,idle", "scenarios to run, in order")
	flag.IntVar(&o.users, "users", 200, "users in rooms")
	flag.IntVar(&o.rooms, "rooms", 20, "rooms")
	flag.IntVar(&o.roomSize, "room-size", 10, "members per room (users/rooms by default)")
	flag.IntVar(&o.senders, "senders", 50, "sending users")
	flag.IntVar(&o.receivers, "receivers", 50, "long-polling receivers")
	flag.IntVar(&o.seed, "seed", 2000, "messages seeded before the scenarios (initial sync reads them)")
	flag.IntVar(&o.idlePolls, "idle-polls", 1000, "idle long-polling users in the idle scenario")
	flag.IntVar(&o.initialSyncs, "initial-syncs", 20, "initial syncs timed")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each load scenario")
	flag.Float64Var(&o.rate, "rate", 50, "paced scenario: messages per second in all")
	flag.Float64Var(&o.trickle, "trickle", 100, "idle scenario: messages per second in all")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "machi-bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.users < o.rooms*o.roomSize {
		return fmt.Errorf("-users %d is fewer than -rooms × -room-size (%d)", o.users, o.rooms*o.roomSize)
	}
	if o.duration <= 0 || o.duration > 10*time.Minute {
		return fmt.Errorf("-duration must be between 0 and 10m")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	rep := &Report{Target: o.url, Engine: o.engine, Machine: machine(), When: time.Now().UTC()}
	rep.Options.Users, rep.Options.Rooms, rep.Options.RoomSize = o.users, o.rooms, o.roomSize
	rep.Options.Senders, rep.Options.Receivers, rep.Options.Seed, rep.Options.IdlePolls = o.senders, o.receivers, o.seed, o.idlePolls
	rep.Options.Duration, rep.Options.Rate, rep.Options.Trickle = o.duration.String(), o.rate, o.trickle

	var srv *spawned
	if o.spawn != "" {
		var err error
		if srv, err = spawn(ctx, o.spawn, o.engine, o.pgDSN); err != nil {
			return err
		}
		defer srv.cleanup()
		o.url, o.pid = srv.url, srv.pid()
		rep.Target = "machi (spawned)"
		rep.StartupFreshMS = ms(srv.startup)
	} else {
		rep.Engine = ""
	}
	c := newHS(o.url)
	proc := procStats{pid: o.pid}
	if o.pid != 0 {
		time.Sleep(500 * time.Millisecond)
		if rss, _, err := proc.memKiB(); err == nil {
			rep.IdleRSSMiB = mib(rss)
		}
	}

	logf("setting up %d users in %d rooms of %d, seeding %d messages…", o.users, o.rooms, o.roomSize, o.seed)
	w, err := setup(ctx, c, o)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	for _, name := range strings.Split(o.scenarios, ",") {
		switch strings.TrimSpace(name) {
		case "initial":
			logf("initial sync of a user in %d rooms…", o.rooms)
			if rep.InitialSync, err = initialSync(ctx, c, w, o.initialSyncs); err != nil {
				return fmt.Errorf("initial sync: %w", err)
			}
		case "closed":
			logf("closed loop: %d senders, %d receivers, %s…", o.senders, o.receivers, o.duration)
			r, err := w.load(ctx, c, proc, loadSpec{name: "closed-loop", senders: w.senders(o.senders), receivers: w.receivers(o.receivers), duration: o.duration})
			if err != nil {
				return err
			}
			rep.Scenarios = append(rep.Scenarios, r)
		case "paced":
			logf("paced: %.0f msgs/s from %d senders, %d receivers, %s…", o.rate, o.senders, o.receivers, o.duration)
			r, err := w.load(ctx, c, proc, loadSpec{name: fmt.Sprintf("paced %.0f/s", o.rate), senders: w.senders(o.senders), receivers: w.receivers(o.receivers), duration: o.duration, rate: o.rate})
			if err != nil {
				return err
			}
			rep.Scenarios = append(rep.Scenarios, r)
		case "idle":
			logf("idle: registering %d long-polling users…", o.idlePolls)
			idle, err := w.addIdle(ctx, c, o.idlePolls)
			if err != nil {
				return fmt.Errorf("idle users: %w", err)
			}
			logf("idle: %d long-polls, %.0f msgs/s, %s…", len(idle), o.trickle, o.duration)
			r, err := w.load(ctx, c, proc, loadSpec{name: fmt.Sprintf("%d long-polls, %.0f/s", len(idle), o.trickle), senders: w.senders(o.senders), receivers: idle, duration: o.duration, rate: o.trickle})
			if err != nil {
				return err
			}
			rep.Scenarios = append(rep.Scenarios, r)
		case "":
		default:
			return fmt.Errorf("unknown scenario %q", name)
		}
	}
	if srv != nil {
		logf("restarting machi to time a start on a full database…")
		if err := srv.restart(ctx); err != nil {
			return err
		}
		rep.StartupRestartMS = ms(srv.startup)
		time.Sleep(500 * time.Millisecond)
		if rss, _, err := (procStats{pid: srv.pid()}).memKiB(); err == nil {
			rep.IdleRSSRestartMiB = mib(rss)
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		rep.ClientCPUSeconds = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	printTable(os.Stdout, rep)
	if o.jsonOut != "" {
		data, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
func mib(kib int64) float64      { return float64(kib) / 1024 }

// machine describes the host: CPU model and count, memory, Go version.
func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				model = strings.TrimSpace(line[strings.IndexByte(line, ':')+1:])
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(data), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
	}
	return fmt.Sprintf("%s × %d%s, %s/%s, %s", model, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// percentile returns the p-th percentile (0–100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func sortDurations(d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
}

func printTable(w io.Writer, r *Report) {
	fmt.Fprintf(w, "\nmachi-bench — %s", r.Target)
	if r.Engine != "" {
		fmt.Fprintf(w, " on %s", r.Engine)
	}
	fmt.Fprintf(w, "\n%s\n%s\n\n", r.Machine, r.When.Format(time.RFC3339))
	if r.StartupFreshMS > 0 {
		fmt.Fprintf(w, "startup, fresh data folder      %8.1f ms\n", r.StartupFreshMS)
	}
	if r.StartupRestartMS > 0 {
		fmt.Fprintf(w, "startup, after the load         %8.1f ms\n", r.StartupRestartMS)
	}
	if r.IdleRSSMiB > 0 {
		fmt.Fprintf(w, "idle RSS after startup          %8.1f MiB\n", r.IdleRSSMiB)
	}
	if r.IdleRSSRestartMiB > 0 {
		fmt.Fprintf(w, "idle RSS after restart          %8.1f MiB\n", r.IdleRSSRestartMiB)
	}
	if s := r.InitialSync; s != nil {
		fmt.Fprintf(w, "initial sync (%d rooms, %d msgs) p50 %.1f ms, min %.1f ms, max %.1f ms, %d bytes\n",
			s.Rooms, s.Messages, s.P50MS, s.MinMS, s.MaxMS, s.Bytes)
	}
	fmt.Fprintf(w, "\n%-26s %9s %8s %8s %9s %9s %10s %8s %8s %10s %s\n",
		"scenario", "msgs/s", "send p50", "send p99", "deliv p50", "deliv p99", "delivered", "CPU", "peak RSS", "CPU after", "probe")
	for _, s := range r.Scenarios {
		fmt.Fprintf(w, "%-26s %9.0f %6.2fms %6.2fms %7.2fms %7.2fms %4d/%-5d %7.0f%% %5.1fMiB %9.1f%% %5.1fms\n",
			s.Name, s.MsgsPerSec, s.SendP50MS, s.SendP99MS, s.DeliveryP50MS, s.DeliveryP99MS,
			s.Delivered, s.Expected, s.ServerCPUPercent, s.PeakRSSMiB, s.CPUAfterPercent, s.ProbeMS)
		if s.Errors > 0 {
			fmt.Fprintf(w, "  %d send errors, first: %s\n", s.Errors, s.FirstError)
		}
	}
	fmt.Fprintf(w, "\nbench client CPU: %.1f s. CPU is the server's, in %% of one core; \"CPU after\" is its use from 1 to 3 s after the\nlast send; \"probe\" is a send and its arrival in /sync right after the load.\n", r.ClientCPUSeconds)
}
