package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestBenchSmall runs every scenario, scaled down, against a machi it
// spawns, and checks the report holds real measurements.
func TestBenchSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs machi")
	}
	bin := testrig.MachiBinary(t)
	out := filepath.Join(t.TempDir(), "report.json")
	err := run(options{
		spawn: bin, engine: "sqlite", jsonOut: out, scenarios: "initial,closed,paced,idle",
		users: 20, rooms: 2, roomSize: 10, senders: 4, receivers: 4, seed: 40,
		idlePolls: 20, initialSyncs: 3, duration: time.Second, rate: 20, trickle: 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.StartupFreshMS <= 0 || rep.StartupRestartMS <= 0 || rep.IdleRSSMiB <= 0 {
		t.Errorf("startup/RSS not measured: %+v", rep)
	}
	if rep.InitialSync == nil || rep.InitialSync.Rooms != 2 || rep.InitialSync.P50MS <= 0 {
		t.Errorf("initial sync: %+v", rep.InitialSync)
	}
	if len(rep.Scenarios) != 3 {
		t.Fatalf("%d scenarios, want 3", len(rep.Scenarios))
	}
	for _, s := range rep.Scenarios {
		if s.Sent == 0 || s.Errors != 0 || s.Delivered != s.Expected || s.Expected == 0 || s.SendP50MS <= 0 || s.ProbeMS <= 0 {
			t.Errorf("scenario %s: %+v", s.Name, s)
		}
	}
}
