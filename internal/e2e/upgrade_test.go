package e2e

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// upgrade calls POST /rooms/{roomId}/upgrade.
func upgrade(t *testing.T, c *mautrix.Client, room id.RoomID, body any) (id.RoomID, int, matrixErr) {
	t.Helper()
	var out struct {
		Replacement id.RoomID `json:"replacement_room"`
	}
	code, me := do(t, http.DefaultClient, "POST", c.BuildClientURL("v3", "rooms", room, "upgrade"), c.AccessToken, body, &out)
	return out.Replacement, code, me
}

func stateContent(t *testing.T, c *mautrix.Client, room id.RoomID, typ event.Type, key string) map[string]any {
	t.Helper()
	var out map[string]any
	if err := c.StateEvent(ctxT(t), room, typ, key, &out); err != nil {
		t.Fatalf("%s state %s/%q: %v", room, typ.Type, key, err)
	}
	return out
}

// TestRoomUpgrade: 防災課's room, on room version 10, is upgraded to 12 by
// its creator. The new room names its predecessor, has the old room's
// name, topic, rules, pinned events, space parent, alias, directory
// listing and bans, and power levels without its v12 creator; the old
// room gets a tombstone and is closed to members without power. Refusals
// (no power, unknown version, bad body) create nothing.
func TestRoomUpgrade(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol, dave := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol"), register(t, srv, "dave")
		ctx := ctxT(t)
		hs := alice.UserID.Homeserver()
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", RoomAliasName: "bousai",
			Name: "防災課", Topic: "台風・地震の連絡", PowerLevelOverride: &event.PowerLevelsEventContent{
				Users: map[id.UserID]int{alice.UserID: 100}, Events: map[string]int{"m.room.tombstone": 100, "org.machi.drill": 20}, StateDefaultPtr: ptr(50),
			}})
		if err != nil {
			t.Fatal(err)
		}
		old := room.RoomID
		msg, err := alice.SendText(ctx, old, "避難所の一覧")
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range []struct {
			typ     event.Type
			key     string
			content any
		}{
			{event.StatePinnedEvents, "", map[string]any{"pinned": []id.EventID{msg.EventID}}},
			{event.StateSpaceParent, "!soumubu:" + hs, map[string]any{"via": []string{hs}}},
			{event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}},
		} {
			if _, err := alice.SendStateEvent(ctx, old, st.typ, st.key, st.content); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctx, old); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := alice.BanUser(ctx, old, &mautrix.ReqBanUser{UserID: carol.UserID, Reason: "荒らし"}); err != nil {
			t.Fatal(err)
		}
		rooms := func(c *mautrix.Client) int {
			r, err := c.JoinedRooms(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return len(r.JoinedRooms)
		}

		// Refusals first: none of them makes a room.
		for _, c := range []struct {
			who    *mautrix.Client
			body   any
			status int
			code   string
		}{
			{bob, map[string]any{"new_version": "12"}, 403, "M_FORBIDDEN"},
			{dave, map[string]any{"new_version": "12"}, 403, "M_FORBIDDEN"},
			{alice, map[string]any{"new_version": "13"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{alice, map[string]any{"new_version": "banana"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{alice, map[string]any{}, 400, "M_MISSING_PARAM"},
			{alice, map[string]any{"new_version": 12}, 400, "M_BAD_JSON"},
			{alice, map[string]any{"new_version": "12", "additional_creators": []string{"bob"}}, 400, "M_INVALID_PARAM"},
			{alice, []byte("{not json"), 400, "M_NOT_JSON"},
		} {
			if _, code, me := upgrade(t, c.who, old, c.body); code != c.status || me.Code != c.code {
				t.Errorf("upgrade by %s with %v: %d %+v, want %d %s", c.who.UserID, c.body, code, me, c.status, c.code)
			}
		}
		if n := rooms(alice); n != 1 {
			t.Fatalf("alice is in %d rooms after refused upgrades", n)
		}
		if _, code, me := upgrade(t, alice, "!unknown:"+id.RoomID(hs), map[string]any{"new_version": "12"}); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Errorf("upgrade of an unknown room: %d %+v, want 404 M_NOT_FOUND", code, me)
		}
		// alice counts the room as a direct chat with bob: so will the new one.
		if err := alice.SetAccountData(ctx, "m.direct", map[string][]string{string(bob.UserID): {string(old)}}); err != nil {
			t.Fatal(err)
		}

		newRoom, code, me := upgrade(t, alice, old, map[string]any{"new_version": "12"})
		if code != 200 || newRoom == "" {
			t.Fatalf("upgrade: %d %+v", code, me)
		}
		var direct map[string][]string
		if err := alice.GetAccountData(ctx, "m.direct", &direct); err != nil || !slices.Equal(direct[string(bob.UserID)], []string{string(old), string(newRoom)}) {
			t.Errorf("m.direct after the upgrade: %v %v", err, direct)
		}
		create := stateContent(t, alice, newRoom, event.StateCreate, "")
		if create["room_version"] != "12" || create["creator"] != nil {
			t.Errorf("new create event: %v", create)
		}
		if pred, _ := create["predecessor"].(map[string]any); pred["room_id"] != string(old) || pred["event_id"] == nil {
			t.Errorf("predecessor: %v", create["predecessor"])
		}
		for _, c := range []struct {
			typ   event.Type
			key   string
			field string
			want  any
		}{
			{event.StateRoomName, "", "name", "防災課"},
			{event.StateTopic, "", "topic", "台風・地震の連絡"},
			{event.StateJoinRules, "", "join_rule", "public"},
			{event.StateHistoryVisibility, "", "history_visibility", "joined"},
			{event.StateGuestAccess, "", "guest_access", "forbidden"},
			{event.StateCanonicalAlias, "", "alias", "#bousai:" + hs},
			{event.StateMember, string(carol.UserID), "membership", "ban"},
		} {
			if got := stateContent(t, alice, newRoom, c.typ, c.key)[c.field]; got != c.want {
				t.Errorf("new room %s %s = %v, want %v", c.typ.Type, c.field, got, c.want)
			}
		}
		if pinned := stateContent(t, alice, newRoom, event.StatePinnedEvents, ""); len(pinned["pinned"].([]any)) != 1 {
			t.Errorf("pinned events: %v", pinned)
		}
		stateContent(t, alice, newRoom, event.StateSpaceParent, "!soumubu:"+hs)
		var pl event.PowerLevelsEventContent
		if err := alice.StateEvent(ctx, newRoom, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if _, listed := pl.Users[alice.UserID]; listed || pl.Events["org.machi.drill"] != 20 || pl.StateDefault() != 50 {
			t.Errorf("new power levels: users %v events %v state_default %d", pl.Users, pl.Events, pl.StateDefault())
		}

		// The old room: tombstoned, closed to plain members, its canonical
		// alias cleared; the alias and the directory listing moved.
		tomb := stateContent(t, alice, old, event.StateTombstone, "")
		if tomb["replacement_room"] != string(newRoom) || tomb["body"] == "" {
			t.Errorf("tombstone: %v", tomb)
		}
		if err := alice.StateEvent(ctx, old, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if pl.EventsDefault < 50 || pl.Invite() < 50 {
			t.Errorf("old room power levels not restricted: events_default %d invite %d", pl.EventsDefault, pl.Invite())
		}
		if _, err := bob.SendText(ctx, old, "まだ話せる？"); httpErr(t, err).Code != "M_FORBIDDEN" {
			t.Errorf("bob sent in the old room: %v", err)
		}
		if alias := stateContent(t, alice, old, event.StateCanonicalAlias, ""); alias["alias"] != nil {
			t.Errorf("old room still names the alias: %v", alias)
		}
		res, err := bob.ResolveAlias(ctx, id.RoomAlias("#bousai:"+hs))
		if err != nil || res.RoomID != newRoom {
			t.Errorf("alias resolves to %v (%v), want %s", res, err, newRoom)
		}
		pub, err := srv.Store.PublishedRooms(context.Background())
		if err != nil || !slices.Equal(pub, []string{string(newRoom)}) {
			t.Errorf("published rooms %v (%v), want only %s", pub, err, newRoom)
		}
		// Bob follows the tombstone; carol's ban came along.
		if _, err := bob.JoinRoomByID(ctx, newRoom); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendText(ctx, newRoom, "新しいルームです"); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx, newRoom); httpErr(t, err).Code != "M_FORBIDDEN" {
			t.Errorf("banned carol joined the new room: %v", err)
		}
	})
}

// TestRoomUpgradeToV11ByModerator: a moderator allowed to send the
// tombstone but not to change power levels upgrades a v10 room to v11:
// they get the power to copy the state, then fall back to their old level;
// the old room's power levels, which they may not change, stay as they are.
func TestRoomUpgradeToV11ByModerator(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "情報政策課", PowerLevelOverride: &event.PowerLevelsEventContent{
			Users:  map[id.UserID]int{alice.UserID: 100, bob.UserID: 50},
			Events: map[string]int{"m.room.tombstone": 50, "m.room.power_levels": 100, "m.room.name": 50, "m.room.history_visibility": 100, "m.room.encryption": 100},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		newRoom, code, me := upgrade(t, bob, room.RoomID, map[string]any{"new_version": "11"})
		if code != 200 {
			t.Fatalf("upgrade: %d %+v", code, me)
		}
		if create := stateContent(t, bob, newRoom, event.StateCreate, ""); create["room_version"] != "11" {
			t.Errorf("create: %v", create)
		}
		var pl event.PowerLevelsEventContent
		if err := bob.StateEvent(ctx, newRoom, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if pl.Users[bob.UserID] != 50 || pl.Users[alice.UserID] != 100 || pl.Events["m.room.power_levels"] != 100 {
			t.Errorf("new power levels: users %v events %v", pl.Users, pl.Events)
		}
		if err := bob.StateEvent(ctx, room.RoomID, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if pl.EventsDefault != 0 {
			t.Errorf("old room's events_default changed to %d by a user without the power to", pl.EventsDefault)
		}
		if tomb := stateContent(t, bob, room.RoomID, event.StateTombstone, ""); tomb["replacement_room"] != string(newRoom) {
			t.Errorf("tombstone: %v", tomb)
		}
		// Alice, still admin of the new room, can change its name.
		if _, err := alice.JoinRoomByID(ctx, newRoom); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx, newRoom, event.StateRoomName, "", map[string]any{"name": "情報政策課（新）"}); err != nil {
			t.Fatal(err)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestRoomUpgradePolicy: the city's rules apply to upgrades. After hours a
// phone may not upgrade a room (working-hours, before any room is made);
// during hours it may.
func TestRoomUpgradePolicy(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		tanaka := register(t, c.srv, "tanaka")
		room, err := tanaka.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Name: "防災課"})
		if err != nil {
			t.Fatal(err)
		}
		phone := c.phoneLogin(tanaka.UserID, "secret-tanaka")
		c.clock.Set(time.Date(2026, 11, 25, 19, 0, 0, 0, jst))
		_, code, me := upgrade(t, phone, room.RoomID, map[string]any{"new_version": "11"})
		wantDenial(t, "upgrade from a phone after hours", code, me, 403, "working-hours")
		if r, err := tanaka.JoinedRooms(ctxT(t)); err != nil || len(r.JoinedRooms) != 1 {
			t.Fatalf("rooms after the refused upgrade: %v %v", r, err)
		}
		c.clock.Set(wednesdayMorning)
		if _, code, me := upgrade(t, phone, room.RoomID, map[string]any{"new_version": "11"}); code != 200 {
			t.Fatalf("upgrade from a phone in working hours: %d %+v", code, me)
		}
	})
}

// TestRoomUpgradeV12Creators: creators of a v12 room outrank everyone and
// are not listed in its power levels. Upgrading a v12 room to 12 with an
// additional creator names both as creators and lists neither; going back
// to 11, the upgrader (a creator, so of unbounded power) is listed at 100.
func TestRoomUpgradeV12Creators(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "総務課", RoomVersion: "12"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		v12, code, me := upgrade(t, alice, room.RoomID, map[string]any{"new_version": "12", "additional_creators": []string{string(bob.UserID)}})
		if code != 200 {
			t.Fatalf("12 → 12: %d %+v", code, me)
		}
		create := stateContent(t, alice, v12, event.StateCreate, "")
		if extra, _ := create["additional_creators"].([]any); len(extra) != 1 || extra[0] != string(bob.UserID) {
			t.Errorf("additional_creators: %v", create["additional_creators"])
		}
		var pl event.PowerLevelsEventContent
		if err := alice.StateEvent(ctx, v12, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if len(pl.Users) != 0 {
			t.Errorf("v12 power levels list creators: %v", pl.Users)
		}
		// Bob, a creator of the new room, may join and rename it.
		if _, err := bob.JoinRoomByID(ctx, v12); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendStateEvent(ctx, v12, event.StateRoomName, "", map[string]any{"name": "総務課（新）"}); err != nil {
			t.Errorf("additional creator renames: %v", err)
		}
		v11, code, me := upgrade(t, alice, v12, map[string]any{"new_version": "11"})
		if code != 200 {
			t.Fatalf("12 → 11: %d %+v", code, me)
		}
		if err := alice.StateEvent(ctx, v11, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if pl.Users[alice.UserID] != 100 {
			t.Errorf("v11 power levels after a v12 creator's upgrade: %v", pl.Users)
		}
		if name := stateContent(t, alice, v11, event.StateRoomName, ""); name["name"] != "総務課（新）" {
			t.Errorf("name: %v", name)
		}
	})
}

// TestRoomUpgradeBogusRoom: upgrading a room the server does not know is
// 404 M_NOT_FOUND (SyTest's "/upgrade of a bogus room fails gracefully"); a
// known room the user is not in stays 403.
func TestRoomUpgradeBogusRoom(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		if _, code, me := upgrade(t, alice, "!fail:unknown", map[string]any{"new_version": "11"}); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Fatalf("bogus room: %d %s, want 404 M_NOT_FOUND", code, me.Code)
		}
		room, err := bob.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		if _, code, me := upgrade(t, alice, room.RoomID, map[string]any{"new_version": "11"}); code != 403 || me.Code != "M_FORBIDDEN" {
			t.Fatalf("someone else's room: %d %s, want 403 M_FORBIDDEN", code, me.Code)
		}
	})
}

// TestRoomUpgradeCopiesPushRules: a local member's own push rules for the
// old room (a room rule, an override with a room_id condition) are copied
// for the new room on upgrade (v10 → v11), the originals kept; rules about
// other rooms are not copied (SyTest's "local user has push rules copied to
// upgraded room").
func TestRoomUpgradeCopiesPushRules(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "10", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		other, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		old := string(room.RoomID)
		put := func(kind, ruleID string, body map[string]any) {
			t.Helper()
			if code, me := do(t, http.DefaultClient, "PUT", bob.BuildClientURL("v3", "pushrules", "global", kind, ruleID), bob.AccessToken, body, nil); code != 200 {
				t.Fatalf("PUT push rule %s/%s: %d %s", kind, ruleID, code, me.Code)
			}
		}
		put("room", old, map[string]any{"actions": []any{"notify"}})
		put("override", "mute-"+old, map[string]any{"actions": []any{},
			"conditions": []any{map[string]any{"kind": "event_match", "key": "room_id", "pattern": old}}})
		put("room", string(other.RoomID), map[string]any{"actions": []any{}})
		if err := bob.AddTag(ctx, room.RoomID, event.RoomTagFavourite, 0.5); err != nil {
			t.Fatal(err)
		}

		newRoom, code, me := upgrade(t, alice, room.RoomID, map[string]any{"new_version": "11"})
		if code != 200 {
			t.Fatalf("upgrade: %d %s", code, me.Code)
		}
		nr := string(newRoom)
		// bob's tags follow him when he joins the new room.
		if _, err := alice.InviteUser(ctx, newRoom, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, newRoom); err != nil {
			t.Fatal(err)
		}
		tags, err := bob.GetTags(ctx, newRoom)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := tags.Tags[event.RoomTagFavourite]; !ok || len(tags.Tags) != 1 {
			t.Errorf("bob's tags in the new room: %+v", tags.Tags)
		}
		var rules struct {
			Global map[string][]struct {
				RuleID     string           `json:"rule_id"`
				Default    bool             `json:"default"`
				Actions    []any            `json:"actions"`
				Conditions []map[string]any `json:"conditions"`
			} `json:"global"`
		}
		if code, me := do(t, http.DefaultClient, "GET", bob.BuildClientURL("v3", "pushrules", ""), bob.AccessToken, nil, &rules); code != 200 {
			t.Fatalf("GET push rules: %d %s", code, me.Code)
		}
		ids := map[string][]string{}
		for kind, list := range rules.Global {
			for _, r := range list {
				if r.Default {
					continue
				}
				ids[kind] = append(ids[kind], r.RuleID)
				if r.RuleID == "mute-"+nr && (len(r.Conditions) != 1 || r.Conditions[0]["pattern"] != nr) {
					t.Errorf("copied override's conditions: %v", r.Conditions)
				}
				if r.RuleID == nr && (len(r.Actions) != 1 || r.Actions[0] != "notify") {
					t.Errorf("copied room rule's actions: %v", r.Actions)
				}
			}
		}
		slices.Sort(ids["room"])
		want := []string{old, nr, string(other.RoomID)}
		slices.Sort(want)
		deepEq(t, "bob's room rules", ids["room"], want)
		deepEq(t, "bob's override rules", ids["override"], []string{"mute-" + old, "mute-" + nr})

		// alice had no rules for the room: none made.
		if code, _ := do(t, http.DefaultClient, "GET", alice.BuildClientURL("v3", "pushrules", "global", "room", nr), alice.AccessToken, nil, nil); code != 404 {
			t.Fatalf("alice has a room rule for the new room: %d", code)
		}
	})
}
