package search

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

type allowAll struct{}

func (allowAll) CheckEvent(context.Context, policy.EventInput) *policy.Denial { return nil }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var testKey = func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(nil); return k }()

func newRooms(t testing.TB, store storage.Store) *rooms.Service {
	t.Helper()
	s, err := rooms.New(context.Background(), rooms.Config{ServerName: "test.local", KeyID: "ed25519:a", Key: testKey, DefaultVersion: "10", Log: quiet}, store, allowAll{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fixture is a rooms service with an index over one store.
type fixture struct {
	t     testing.TB
	store storage.Store
	dir   string
	svc   *rooms.Service
	idx   *Index
}

func (f *fixture) open() {
	f.t.Helper()
	f.svc = newRooms(f.t, f.store)
	idx, err := Open(context.Background(), f.dir, f.svc, f.store, quiet)
	if err != nil {
		f.t.Fatal(err)
	}
	f.idx = idx
}

func (f *fixture) close() {
	f.svc.Close()
	if f.idx != nil {
		if err := f.idx.Close(); err != nil {
			f.t.Fatal(err)
		}
	}
	f.svc, f.idx = nil, nil
}

func (f *fixture) send(roomID, sender, typ string, content any) string {
	f.t.Helper()
	b, _ := json.Marshal(content)
	req := &rooms.Request{RoomID: roomID, Sender: sender, Type: typ, Content: b}
	if typ == "m.room.name" || typ == "m.room.topic" {
		req.StateKey = new(string)
	}
	ev, err := f.svc.Submit(context.Background(), req)
	if err != nil {
		f.t.Fatalf("send %s: %v", typ, err)
	}
	return ev.ID()
}

func (f *fixture) msg(roomID, sender, body string) string {
	return f.send(roomID, sender, "m.room.message", map[string]string{"msgtype": "m.text", "body": body})
}

// caughtUp waits (bounded) until the index holds everything committed.
func (f *fixture) caughtUp() {
	f.t.Helper()
	want := f.svc.Stream().Current()
	for i := 0; i < 500 && f.idx.Checkpoint() < want; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := f.idx.Checkpoint(); got < want {
		f.t.Fatalf("index checkpoint %d, want %d", got, want)
	}
}

func (f *fixture) find(q Query) []string {
	f.t.Helper()
	if q.Size == 0 {
		q.Size = 50
	}
	res, err := f.idx.Search(context.Background(), q)
	if err != nil {
		f.t.Fatal(err)
	}
	ids := []string{}
	for _, h := range res.Hits {
		ids = append(ids, h.EventID)
	}
	return ids
}

func newFixture(t *testing.T, engine string) *fixture {
	f := &fixture{t: t, store: testrig.OpenStore(t, engine), dir: filepath.Join(t.TempDir(), "search-index")}
	f.open()
	t.Cleanup(func() {
		if f.svc != nil {
			f.close()
		}
	})
	return f
}

func everywhere(roomIDs ...string) map[string]int64 {
	m := map[string]int64{}
	for _, r := range roomIDs {
		m[r] = math.MaxInt64
	}
	return m
}

func TestJapaneseAndMixedText(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		f := newFixture(t, engine)
		ctx := context.Background()
		alice := "@alice:test.local"
		roomID, err := f.svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		docs := f.msg(roomID, alice, "課内会議資料を共有します")
		mixed := f.msg(roomID, alice, "防災訓練 schedule は来週です")
		glued := f.msg(roomID, alice, "防災訓練scheduleの件")
		english := f.msg(roomID, alice, "The Budget Meeting moved to 10:00")
		wide := f.msg(roomID, alice, "ＰＤＦで送ります ｶﾀｶﾅ")
		lone := f.msg(roomID, alice, "大会")
		name := f.send(roomID, alice, "m.room.name", map[string]string{"name": "総務課 連絡室"})
		topic := f.send(roomID, alice, "m.room.topic", map[string]string{"topic": "庁内の連絡 and notices"})
		f.idx.Sync(ctx, 5*time.Second)

		for _, tc := range []struct {
			term string
			keys []string
			want []string
		}{
			{"会議", nil, []string{docs}},
			{"資料", nil, []string{docs}},
			{"会議資料", nil, []string{docs}},
			{"課内会議資料", nil, []string{docs}},
			{"資料会議", nil, nil}, // bigrams must be adjacent, in order
			{"会", nil, []string{docs, lone}},
			{"課", nil, []string{docs, name}},
			{"防災訓練", nil, []string{mixed, glued}},
			{"schedule", nil, []string{mixed, glued}},
			{"SCHEDULE 防災", nil, []string{mixed, glued}},
			{"防災訓練 schedule", nil, []string{mixed, glued}},
			{"防災訓練schedule", nil, []string{mixed, glued}},
			{"訓練sch", nil, nil},
			{"budget meeting", nil, []string{english}},
			{"Meeting", nil, []string{english}},
			{"meet", nil, nil}, // no stemming, no prefixes
			{"10:00", nil, []string{english}},
			{"pdf", nil, []string{wide}},
			{"カタカナ", nil, []string{wide}},
			{"総務課", nil, []string{name}},
			{"連絡", nil, []string{name, topic}},
			{"連絡", []string{"content.topic"}, []string{topic}},
			{"連絡", []string{"content.name"}, []string{name}},
			{"連絡", []string{"content.body"}, nil},
			{"notices", nil, []string{topic}},
			{"。、！", nil, nil},
		} {
			got := f.find(Query{Term: tc.term, Keys: tc.keys, Rooms: everywhere(roomID)})
			slices.Sort(got)
			want := slices.Clone(tc.want)
			if want == nil {
				want = []string{}
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("search %q in %v: got %v, want %v", tc.term, tc.keys, got, want)
			}
		}
	})
}

func TestFiltersOrderAndRooms(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		f := newFixture(t, engine)
		ctx := context.Background()
		alice, bob := "@alice:test.local", "@bob:test.local"
		r1, err := f.svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := f.svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Submit(ctx, &rooms.Request{RoomID: r1, Sender: bob, Type: spec.MRoomMember, StateKey: &bob, Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
			t.Fatal(err)
		}
		a1 := f.msg(r1, alice, "防災 one")
		b1 := f.msg(r1, bob, "防災 two")
		file := f.send(r1, alice, "m.room.message", map[string]string{"msgtype": "m.file", "body": "防災 plan.pdf", "url": "mxc://test.local/abc"})
		a2 := f.msg(r2, alice, "防災 three")
		f.idx.Sync(ctx, 5*time.Second)
		ev, err := f.svc.Event(ctx, b1)
		if err != nil {
			t.Fatal(err)
		}
		yes, no := true, false
		for _, tc := range []struct {
			name  string
			q     Query
			want  []string
			order bool // want is in order
		}{
			{"both rooms, recent", Query{Rooms: everywhere(r1, r2), Recent: true}, []string{a2, file, b1, a1}, true},
			{"one room", Query{Rooms: everywhere(r1)}, []string{a1, b1, file}, false},
			{"room read up to b1", Query{Rooms: map[string]int64{r1: ev.Pos, r2: math.MaxInt64}}, []string{a1, b1, a2}, false},
			{"senders", Query{Rooms: everywhere(r1, r2), Senders: []string{bob}}, []string{b1}, false},
			{"not senders", Query{Rooms: everywhere(r1, r2), NotSenders: []string{bob}}, []string{a1, file, a2}, false},
			{"contains url", Query{Rooms: everywhere(r1, r2), ContainsURL: &yes}, []string{file}, false},
			{"without url", Query{Rooms: everywhere(r1, r2), ContainsURL: &no}, []string{a1, b1, a2}, false},
			{"types", Query{Rooms: everywhere(r1, r2), Types: []string{"m.room.topic"}}, nil, false},
			{"not types", Query{Rooms: everywhere(r1, r2), NotTypes: []string{"m.room.message"}}, nil, false},
			{"recent, below b1", Query{Rooms: everywhere(r1, r2), Recent: true, Below: ev.Pos}, []string{a1}, true},
			{"recent, page 2", Query{Rooms: everywhere(r1, r2), Recent: true, From: 2, Size: 2}, []string{b1, a1}, true},
			{"no rooms", Query{Rooms: map[string]int64{}}, nil, false},
		} {
			tc.q.Term = "防災"
			got := f.find(tc.q)
			want := slices.Clone(tc.want)
			if want == nil {
				want = []string{}
			}
			if !tc.order {
				slices.Sort(got)
				slices.Sort(want)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, want)
			}
		}
	})
}

func TestCatchUp(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		f := newFixture(t, engine)
		ctx := context.Background()
		alice := "@alice:test.local"
		roomID, err := f.svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		first := f.msg(roomID, alice, "予算会議の議事録")
		doomed := f.msg(roomID, alice, "予算案 draft")
		f.caughtUp()
		f.close()

		// The server runs without the index (as after a crash that lost
		// its last batches): a message and a redaction it never saw.
		f.svc = newRooms(t, f.store)
		later := f.msg(roomID, alice, "予算の追加資料")
		red, err := f.svc.Submit(ctx, &rooms.Request{RoomID: roomID, Sender: alice, Type: "m.room.redaction", Redacts: doomed, Content: json.RawMessage(`{}`)})
		if err != nil || red == nil {
			t.Fatalf("redact: %v", err)
		}
		f.svc.Close()
		f.svc = nil

		check := func(stage string) {
			t.Helper()
			got := f.find(Query{Term: "予算", Rooms: everywhere(roomID)})
			slices.Sort(got)
			want := []string{first, later}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("%s: search 予算: got %v, want %v", stage, got, want)
			}
			if got := f.find(Query{Term: "draft", Rooms: everywhere(roomID)}); len(got) != 0 {
				t.Fatalf("%s: the redacted event is still found: %v", stage, got)
			}
		}
		f.open()
		f.caughtUp()
		check("index behind, caught up")
		f.close()

		if err := os.RemoveAll(f.dir); err != nil {
			t.Fatal(err)
		}
		f.open()
		f.caughtUp()
		check("index deleted, rebuilt")

		// A damaged index is rebuilt too.
		f.close()
		if err := os.WriteFile(filepath.Join(f.dir, "index_meta.json"), []byte("{nonsense"), 0o600); err != nil {
			t.Fatal(err)
		}
		f.open()
		f.caughtUp()
		check("index damaged, rebuilt")

		// An index ahead of its database (restored from an older backup)
		// is rebuilt: its documents are not the database's.
		f.close()
		f.store = testrig.OpenStore(t, engine)
		f.open()
		fresh, err := f.svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		newer := f.msg(fresh, alice, "予算 after restore")
		f.caughtUp()
		if got := f.find(Query{Term: "予算", Rooms: everywhere(roomID, fresh)}); !slices.Equal(got, []string{newer}) {
			t.Fatalf("index ahead of the database: got %v, want only %s", got, newer)
		}
	})
}

func TestQueueOverflow(t *testing.T) {
	f := newFixture(t, "sqlite")
	ctx := context.Background()
	alice := "@alice:test.local"
	roomID, err := f.svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	// Pretend the queue overflowed: drop what comes, as committed does.
	f.idx.mu.Lock()
	f.idx.behind = true
	f.idx.mu.Unlock()
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, f.msg(roomID, alice, fmt.Sprintf("溢れ %d", i)))
	}
	f.idx.Sync(ctx, 5*time.Second)
	f.caughtUp()
	got := f.find(Query{Term: "溢れ", Rooms: everywhere(roomID)})
	slices.Sort(got)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("after an overflow: found %d of %d", len(got), len(ids))
	}
}

// TestTwoIndexes: two servers in one process (as the federation tests
// run them) each keep their own index, and one restarts while the other
// runs.
func TestTwoIndexes(t *testing.T) {
	a, b := newFixture(t, "sqlite"), newFixture(t, "sqlite")
	ctx := context.Background()
	alice := "@alice:test.local"
	ra, err := a.svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.svc.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	inA, inB := a.msg(ra, alice, "市役所 A"), b.msg(rb, alice, "市役所 B")
	a.close()
	a.open()
	a.caughtUp()
	b.caughtUp()
	if got := a.find(Query{Term: "市役所", Rooms: everywhere(ra, rb)}); !slices.Equal(got, []string{inA}) {
		t.Errorf("index a: %v", got)
	}
	if got := b.find(Query{Term: "市役所", Rooms: everywhere(ra, rb)}); !slices.Equal(got, []string{inB}) {
		t.Errorf("index b: %v", got)
	}
	// Each has its own folder, and a second opener of one fails at once.
	if _, err := Open(ctx, a.dir, b.svc, b.store, quiet); err == nil || !strings.Contains(err.Error(), "another process has it open") {
		t.Fatalf("a second Open of a running index: %v", err)
	}
	if got := a.find(Query{Term: "市役所", Rooms: everywhere(ra)}); !slices.Equal(got, []string{inA}) {
		t.Errorf("index a after the refused Open: %v", got)
	}
}
