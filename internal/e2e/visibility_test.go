package e2e

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestHistoryVisibility: under "joined", a newcomer sees nothing from
// before their join — not in /sync, /messages, /context or /event — and
// everything after; under "shared" they see the earlier history.
func TestHistoryVisibility(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		secret, err := alice.SendText(ctx, room.RoomID, "人事の内示（参加前）")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "ようこそ"); err != nil {
			t.Fatal(err)
		}

		bodies := func(evs []*event.Event) map[string]bool {
			out := map[string]bool{}
			for _, ev := range evs {
				if b, _ := ev.Content.Raw["body"].(string); b != "" {
					out[b] = true
				}
			}
			return out
		}
		sync, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		got := bodies(sync.Rooms.Join[room.RoomID].Timeline.Events)
		if got["人事の内示（参加前）"] || !got["ようこそ"] {
			t.Errorf("bob's sync timeline: %v", got)
		}
		msgs, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		got = bodies(msgs.Chunk)
		if got["人事の内示（参加前）"] || !got["ようこそ"] {
			t.Errorf("bob's /messages: %v", got)
		}
		if _, err := bob.GetEvent(ctx, room.RoomID, secret.EventID); err == nil {
			t.Error("bob fetched a pre-join event with /event")
		}
		if _, err := bob.Context(ctx, room.RoomID, secret.EventID, nil, 10); err == nil {
			t.Error("bob fetched a pre-join event with /context")
		}
		// Alice still sees all of it.
		if _, err := alice.GetEvent(ctx, room.RoomID, secret.EventID); err != nil {
			t.Errorf("alice cannot read her own message: %v", err)
		}

		// Switch to shared: a later newcomer sees events sent under shared,
		// but still not those sent under joined before their time.
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateHistoryVisibility, "",
			&event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "共有の議事"); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		msgs, err = carol.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		got = bodies(msgs.Chunk)
		if !got["共有の議事"] || got["人事の内示（参加前）"] || got["ようこそ"] {
			t.Errorf("carol's /messages: %v", got)
		}
	})
}
