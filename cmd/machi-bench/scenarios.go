package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// world is the bench's users and rooms on the server.
type world struct {
	run    string // random tag: names and message stamps of this run
	users  []*user
	roomOf []int // users[i] is in rooms[roomOf[i]]
	rooms  []string
	reader *user // joined to every room; its initial sync is timed
	seeded int
}

// parallel runs fn(i) for i in [0,n) on at most workers goroutines and
// returns the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		next  atomic.Int64
		first error
		once  sync.Once
		wg    sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func setup(ctx context.Context, c *hs, o options) (*world, error) {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	w := &world{run: hex.EncodeToString(b)}
	w.users = make([]*user, o.users)
	w.roomOf = make([]int, o.users)
	err := parallel(o.users, 16, func(i int) error {
		u, err := c.register(ctx, fmt.Sprintf("bench%s-%d", w.run, i), "bench-password")
		w.users[i] = u
		return err
	})
	if err != nil {
		return nil, err
	}
	if w.reader, err = c.register(ctx, fmt.Sprintf("bench%s-reader", w.run), "bench-password"); err != nil {
		return nil, err
	}
	// Room k holds users[k*size : (k+1)*size]; users past rooms×size go
	// round-robin. Public rooms let members join without invites.
	w.rooms = make([]string, o.rooms)
	err = parallel(o.rooms, 8, func(k int) error {
		id, err := c.createRoom(ctx, w.users[k*o.roomSize], nil)
		w.rooms[k] = id
		return err
	})
	if err != nil {
		return nil, err
	}
	for i := range w.users {
		w.roomOf[i] = (i / o.roomSize) % o.rooms
	}
	err = parallel(o.users, 16, func(i int) error {
		if i%o.roomSize == 0 && i < o.rooms*o.roomSize {
			return nil // the creator
		}
		return c.join(ctx, w.users[i], w.rooms[w.roomOf[i]])
	})
	if err != nil {
		return nil, err
	}
	if err := parallel(len(w.rooms), 8, func(k int) error { return c.join(ctx, w.reader, w.rooms[k]) }); err != nil {
		return nil, err
	}
	// Seed: each room gets its share, sent by its members in turn.
	err = parallel(len(w.rooms), len(w.rooms), func(k int) error {
		var members []*user
		for i, r := range w.roomOf {
			if r == k {
				members = append(members, w.users[i])
			}
		}
		n := o.seed / len(w.rooms)
		if k < o.seed%len(w.rooms) {
			n++
		}
		for j := 0; j < n; j++ {
			if err := c.send(ctx, members[j%len(members)], w.rooms[k], w.run+"-seed", int64(j)); err != nil {
				return err
			}
		}
		return nil
	})
	w.seeded = o.seed
	return w, err
}

// senders picks n users spread over the rooms (every 4th user), receivers
// picks n others (every 4th, offset by one), as in the Dendrite figures.
func (w *world) senders(n int) []int   { return w.pick(n, 0) }
func (w *world) receivers(n int) []int { return w.pick(n, 1) }

func (w *world) pick(n, offset int) []int {
	var out []int
	for i := offset; i < len(w.users) && len(out) < n; i += 4 {
		out = append(out, i)
	}
	return out
}

// addIdle registers n more users, each joined to one of the rooms, for the
// idle long-poll scenario; it returns their indexes.
func (w *world) addIdle(ctx context.Context, c *hs, n int) ([]int, error) {
	base := len(w.users)
	w.users = append(w.users, make([]*user, n)...)
	w.roomOf = append(w.roomOf, make([]int, n)...)
	err := parallel(n, 16, func(j int) error {
		i := base + j
		u, err := c.register(ctx, fmt.Sprintf("bench%s-idle%d", w.run, j), "bench-password")
		if err != nil {
			return err
		}
		w.users[i], w.roomOf[i] = u, j%len(w.rooms)
		return c.join(ctx, u, w.rooms[w.roomOf[i]])
	})
	idx := make([]int, n)
	for j := range idx {
		idx[j] = base + j
	}
	return idx, err
}

// InitialSync is the timing of a full /sync of the reader.
type InitialSync struct {
	Rooms    int     `json:"rooms"`
	Messages int     `json:"messages"`
	Runs     int     `json:"runs"`
	P50MS    float64 `json:"p50_ms"`
	MinMS    float64 `json:"min_ms"`
	MaxMS    float64 `json:"max_ms"`
	Bytes    int     `json:"bytes"`
}

func initialSync(ctx context.Context, c *hs, w *world, runs int) (*InitialSync, error) {
	var times []time.Duration
	size := 0
	for i := 0; i < runs; i++ {
		start := time.Now()
		resp, n, err := c.sync(ctx, w.reader, "", 0, "")
		if err != nil {
			return nil, err
		}
		times = append(times, time.Since(start))
		size = n
		if len(resp.Rooms.Join) != len(w.rooms) {
			return nil, fmt.Errorf("initial sync has %d joined rooms, want %d", len(resp.Rooms.Join), len(w.rooms))
		}
	}
	sortDurations(times)
	return &InitialSync{Rooms: len(w.rooms), Messages: w.seeded, Runs: runs,
		P50MS: ms(percentile(times, 50)), MinMS: ms(times[0]), MaxMS: ms(times[len(times)-1]), Bytes: size}, nil
}

type loadSpec struct {
	name      string
	senders   []int
	receivers []int
	duration  time.Duration
	rate      float64 // 0: closed loop
}

// ScenarioResult is one load scenario's figures.
type ScenarioResult struct {
	Name             string  `json:"name"`
	Sent             int     `json:"sent"`
	Errors           int     `json:"errors"`
	FirstError       string  `json:"first_error,omitempty"`
	Seconds          float64 `json:"seconds"`
	MsgsPerSec       float64 `json:"msgs_per_sec"`
	SendP50MS        float64 `json:"send_p50_ms"`
	SendP99MS        float64 `json:"send_p99_ms"`
	Delivered        int     `json:"delivered"`
	Expected         int     `json:"expected"`
	DeliveryP50MS    float64 `json:"delivery_p50_ms"`
	DeliveryP99MS    float64 `json:"delivery_p99_ms"`
	ServerCPUPercent float64 `json:"server_cpu_percent,omitempty"`
	PeakRSSMiB       float64 `json:"peak_rss_mib,omitempty"`
	CPUAfterPercent  float64 `json:"cpu_after_percent,omitempty"`
	ProbeMS          float64 `json:"probe_ms"`
}

// receiverSet long-polls /sync for a set of users and records, per
// receiver per event, how long after its send each stamped event arrived.
type receiverSet struct {
	tag       string
	mu        sync.Mutex
	latencies []time.Duration
	delivered atomic.Int64
	ready     sync.WaitGroup
	done      sync.WaitGroup
	errs      atomic.Int64
}

func (rs *receiverSet) start(ctx context.Context, c *hs, users []*user) {
	rs.ready.Add(len(users))
	rs.done.Add(len(users))
	for _, u := range users {
		go func(u *user) {
			defer rs.done.Done()
			var since string
			for attempt := 0; ; attempt++ {
				resp, _, err := c.sync(ctx, u, "", 0, syncFilter)
				if err == nil {
					since = resp.NextBatch
					break
				}
				if ctx.Err() != nil || attempt == 20 {
					rs.errs.Add(1)
					rs.ready.Done()
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			rs.ready.Done()
			var local []time.Duration
			defer func() {
				rs.mu.Lock()
				rs.latencies = append(rs.latencies, local...)
				rs.mu.Unlock()
			}()
			for ctx.Err() == nil {
				resp, _, err := c.sync(ctx, u, since, 30*time.Second, syncFilter)
				if err != nil {
					if ctx.Err() == nil {
						rs.errs.Add(1)
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				now := time.Now().UnixMicro()
				since = resp.NextBatch
				for _, room := range resp.Rooms.Join {
					for _, ev := range room.Timeline.Events {
						if ev.Content.Run == rs.tag {
							local = append(local, time.Duration(now-ev.Content.TS)*time.Microsecond)
							rs.delivered.Add(1)
						}
					}
				}
			}
		}(u)
	}
}

// load runs senders (closed loop, or paced at spec.rate in all) against
// long-polling receivers for spec.duration, then checks the server after
// the load: its CPU from 1 to 3 s later, and one probe message.
func (w *world) load(ctx context.Context, c *hs, proc procStats, spec loadSpec) (ScenarioResult, error) {
	res := ScenarioResult{Name: spec.name}
	tag := fmt.Sprintf("%s-%s", w.run, spec.name)
	rctx, stopReceivers := context.WithCancel(ctx)
	defer stopReceivers()
	rs := &receiverSet{tag: tag}
	var rusers []*user
	perRoom := make([]int, len(w.rooms)) // receivers per room
	for _, i := range spec.receivers {
		rusers = append(rusers, w.users[i])
		perRoom[w.roomOf[i]]++
	}
	rs.start(rctx, c, rusers)
	rs.ready.Wait()
	if n := rs.errs.Load(); n > 0 {
		return res, fmt.Errorf("%s: %d receivers could not start syncing", spec.name, n)
	}
	time.Sleep(100 * time.Millisecond) // let the long-polls park

	var (
		mu       sync.Mutex
		sendLats []time.Duration
		expected atomic.Int64
		errCount atomic.Int64
		firstErr atomic.Value
		seq      atomic.Int64
		wg       sync.WaitGroup
	)
	cpu0, _ := proc.cpu()
	var sampler *peakSampler
	if proc.pid != 0 {
		sampler = proc.samplePeak(50 * time.Millisecond)
	}
	start := time.Now()
	deadline := start.Add(spec.duration)
	interval := time.Duration(0)
	if spec.rate > 0 {
		interval = time.Duration(float64(len(spec.senders)) / spec.rate * float64(time.Second))
	}
	for si, i := range spec.senders {
		wg.Add(1)
		go func(si int, u *user, room int) {
			defer wg.Done()
			var local []time.Duration
			next := start
			if interval > 0 {
				next = start.Add(interval * time.Duration(si) / time.Duration(len(spec.senders)))
			}
			for {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(interval)
				}
				t0 := time.Now()
				if !t0.Before(deadline) || ctx.Err() != nil {
					break
				}
				err := c.send(ctx, u, w.rooms[room], tag, seq.Add(1))
				if err != nil {
					if errCount.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					continue
				}
				local = append(local, time.Since(t0))
				expected.Add(int64(perRoom[room]))
			}
			mu.Lock()
			sendLats = append(sendLats, local...)
			mu.Unlock()
		}(si, w.users[i], w.roomOf[i])
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := proc.cpu()
	if sampler != nil {
		res.PeakRSSMiB = mib(sampler.Stop())
	}

	// Drain: wait (bounded) for deliveries of what was sent.
	drainUntil := time.Now().Add(5 * time.Second)
	for rs.delivered.Load() < expected.Load() && time.Now().Before(drainUntil) {
		time.Sleep(10 * time.Millisecond)
	}
	stopReceivers()
	rs.done.Wait()

	// After the load: the server should go quiet at once and still answer.
	if proc.pid != 0 {
		time.Sleep(time.Second - time.Since(start.Add(elapsed)))
		a, _ := proc.cpu()
		time.Sleep(2 * time.Second)
		b, _ := proc.cpu()
		res.CPUAfterPercent = 100 * (b - a).Seconds() / 2
	}
	probe, err := w.probe(ctx, c, spec.senders[0], spec.receivers[0])
	if err != nil {
		return res, fmt.Errorf("%s: the server did not answer after the load: %w", spec.name, err)
	}
	res.ProbeMS = ms(probe)

	sortDurations(sendLats)
	sortDurations(rs.latencies)
	res.Sent = len(sendLats)
	res.Errors = int(errCount.Load())
	if v := firstErr.Load(); v != nil {
		res.FirstError = v.(string)
	}
	res.Seconds = elapsed.Seconds()
	res.MsgsPerSec = float64(res.Sent) / elapsed.Seconds()
	res.SendP50MS, res.SendP99MS = ms(percentile(sendLats, 50)), ms(percentile(sendLats, 99))
	res.Delivered, res.Expected = len(rs.latencies), int(expected.Load())
	res.DeliveryP50MS, res.DeliveryP99MS = ms(percentile(rs.latencies, 50)), ms(percentile(rs.latencies, 99))
	if proc.pid != 0 {
		res.ServerCPUPercent = 100 * (cpu1 - cpu0).Seconds() / elapsed.Seconds()
	}
	return res, nil
}

// probe sends one message from a sender and times its arrival in the
// /sync of a user in the same room.
func (w *world) probe(ctx context.Context, c *hs, sender, receiver int) (time.Duration, error) {
	room := w.roomOf[sender]
	var to *user
	for i, r := range w.roomOf {
		if r == room && i != sender {
			to = w.users[i]
			break
		}
	}
	if to == nil {
		to = w.users[receiver]
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	first, _, err := c.sync(pctx, to, "", 0, syncFilter)
	if err != nil {
		return 0, err
	}
	tag := w.run + "-probe"
	start := time.Now()
	if err := c.send(pctx, w.users[sender], w.rooms[room], tag, 0); err != nil {
		return 0, err
	}
	since := first.NextBatch
	for {
		resp, _, err := c.sync(pctx, to, since, 5*time.Second, syncFilter)
		if err != nil {
			return 0, err
		}
		since = resp.NextBatch
		for _, r := range resp.Rooms.Join {
			for _, ev := range r.Timeline.Events {
				if ev.Content.Run == tag {
					return time.Since(start), nil
				}
			}
		}
	}
}
