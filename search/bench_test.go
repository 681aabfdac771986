package search

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/rooms"
)

// benchBodies are message bodies as staff write them: Japanese, English
// and mixed.
var benchBodies = []string{
	"課内会議資料を共有します。ご確認ください。",
	"防災訓練 schedule は来週の水曜日 10:00 からです",
	"The budget meeting moved to room 3B, please bring the draft",
	"住民説明会の議事録（案）を添付しました。修正があれば金曜までに",
	"了解です",
}

// BenchmarkIndexBatch is the indexer's own cost per event: a document
// built and added in batches of 256, as the live feed does under load.
func BenchmarkIndexBatch(b *testing.B) {
	idx, err := openBleve(filepath.Join(b.TempDir(), "idx"), quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer idx.Close()
	contents := make([]json.RawMessage, len(benchBodies))
	for i, body := range benchBodies {
		contents[i], _ = json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	batch := idx.NewBatch()
	for i := 0; i < b.N; i++ {
		addEvent(batch, fmt.Sprintf("$ev%d", i), "!room:test.local", "@alice:test.local", "m.room.message", int64(i+1), contents[i%len(contents)], "")
		if batch.Size() == 256 || i == b.N-1 {
			if err := idx.Batch(batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkRebuild is a rebuild from the database (SQLite): 2000 messages
// read back and indexed from nothing, per iteration.
func BenchmarkRebuild(b *testing.B) {
	store := testrig.OpenStore(b, "sqlite")
	svc := newRooms(b, store)
	ctx := context.Background()
	roomID, err := svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: "@alice:test.local", Preset: "private_chat"})
	if err != nil {
		b.Fatal(err)
	}
	const n = 2000
	for i := 0; i < n; i++ {
		c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": benchBodies[i%len(benchBodies)]})
		if _, err := svc.Submit(ctx, &rooms.Request{RoomID: roomID, Sender: "@alice:test.local", Type: "m.room.message", Content: c}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		x, err := Open(ctx, filepath.Join(b.TempDir(), "idx"), svc, store, quiet)
		if err != nil {
			b.Fatal(err)
		}
		for x.Checkpoint() < svc.Stream().Current() {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		x.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "events/s")
	svc.Close()
}

// BenchmarkSubmitIndexed is rooms' BenchmarkSubmit (50 parallel senders,
// 20 rooms, SQLite) with and without the index fed from OnCommit: what
// the index costs the send path on a shared machine.
func BenchmarkSubmitIndexed(b *testing.B) {
	for _, indexed := range []bool{false, true} {
		b.Run(fmt.Sprintf("indexed=%v", indexed), func(b *testing.B) {
			store := testrig.OpenStore(b, "sqlite")
			svc := newRooms(b, store)
			defer svc.Close()
			ctx := context.Background()
			if indexed {
				x, err := Open(ctx, filepath.Join(b.TempDir(), "idx"), svc, store, quiet)
				if err != nil {
					b.Fatal(err)
				}
				defer x.Close()
			}
			var roomIDs []string
			for i := 0; i < 20; i++ {
				id, err := svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: "@alice:test.local", Preset: "private_chat"})
				if err != nil {
					b.Fatal(err)
				}
				roomIDs = append(roomIDs, id)
			}
			var n atomic.Int64
			content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": benchBodies[0]})
			b.ReportAllocs()
			b.SetParallelism(25)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					if _, err := svc.Submit(ctx, &rooms.Request{RoomID: roomIDs[i%20], Sender: "@alice:test.local", Type: "m.room.message", Content: content}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
