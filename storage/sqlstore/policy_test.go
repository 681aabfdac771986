package sqlstore_test

import (
	"context"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestPolicyStore(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const alice, bob = "@alice:test", "@bob:test"

		// Suspension and device classes.
		must(t, db.CreateUser(ctx, storage.User{UserID: alice, CreatedTS: 1}))
		must(t, db.SetSuspended(ctx, alice, true))
		u, err := db.GetUser(ctx, alice)
		must(t, err)
		if !u.Suspended {
			t.Fatal("suspension not stored")
		}
		must(t, db.SetSuspended(ctx, alice, false))
		wantErr(t, db.SetSuspended(ctx, "@nobody:test", true), storage.ErrNotFound)
		must(t, db.PutDevice(ctx, storage.Device{UserID: alice, DeviceID: "PHONE", TokenHash: "h1", CreatedTS: 1, Class: "mobile"}))
		must(t, db.PutDevice(ctx, storage.Device{UserID: alice, DeviceID: "PC", TokenHash: "h2", CreatedTS: 1}))
		d, err := db.GetDevice(ctx, alice, "PHONE")
		must(t, err)
		if d.Class != "mobile" {
			t.Fatalf("phone class = %q", d.Class)
		}
		d, err = db.DeviceByTokenHash(ctx, "h2")
		must(t, err)
		if d.Class != "office" {
			t.Fatalf("default class = %q, want office", d.Class)
		}

		// Enrollment codes: single use, expiry, per user.
		code := storage.EnrollmentCode{CodeID: "c1", UserID: alice, CodeHash: "hash-c1", CreatedBy: bob, CreatedTS: 100, ExpiresTS: 1000}
		must(t, db.PutEnrollmentCode(ctx, code))
		must(t, db.PutEnrollmentCode(ctx, storage.EnrollmentCode{CodeID: "c2", UserID: alice, CodeHash: "hash-c2", CreatedBy: bob, CreatedTS: 200, ExpiresTS: 300}))
		wantErr(t, db.PutEnrollmentCode(ctx, storage.EnrollmentCode{CodeID: "c1", UserID: bob, CodeHash: "x", ExpiresTS: 1}), storage.ErrConflict)
		got, err := db.EnrollmentCodeByHash(ctx, "hash-c1", 500)
		must(t, err)
		deepEqual(t, "code by hash", got, code)
		_, err = db.UseEnrollmentCode(ctx, bob, "hash-c1", "DEV", 500) // someone else's code
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.UseEnrollmentCode(ctx, alice, "hash-c2", "DEV", 300) // expired
		wantErr(t, err, storage.ErrNotFound)
		used, err := db.UseEnrollmentCode(ctx, alice, "hash-c1", "PHONE", 500)
		must(t, err)
		if used.UsedTS != 500 || used.UsedDevice != "PHONE" {
			t.Fatalf("used code = %+v", used)
		}
		_, err = db.UseEnrollmentCode(ctx, alice, "hash-c1", "PHONE2", 501) // reused
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.EnrollmentCodeByHash(ctx, "hash-c1", 501)
		wantErr(t, err, storage.ErrNotFound)
		codes, err := db.ListEnrollmentCodes(ctx, alice)
		must(t, err)
		if len(codes) != 2 || codes[0].CodeID != "c1" || codes[1].CodeID != "c2" {
			t.Fatalf("codes = %+v", codes)
		}
		must(t, db.DeleteEnrollmentCode(ctx, alice, "c2"))
		wantErr(t, db.DeleteEnrollmentCode(ctx, alice, "c2"), storage.ErrNotFound)

		// Audit log: filters, ranges, paging.
		for i, e := range []storage.AuditEntry{
			{TS: 10, Actor: bob, Action: "user.suspend", Target: alice, Detail: `{"reason":"lost"}`},
			{TS: 20, Actor: alice, DeviceID: "PHONE", Action: "policy.denied", Rule: "working-hours", Target: "!r:test"},
			{TS: 30, Actor: "cli", Action: "device.revoke", Target: alice},
		} {
			must(t, db.AppendAudit(ctx, e))
			_ = i
		}
		all, err := db.QueryAudit(ctx, storage.AuditQuery{})
		must(t, err)
		if len(all) != 3 || all[0].Action != "user.suspend" || all[2].Detail != "{}" || all[1].ID <= all[0].ID {
			t.Fatalf("audit = %+v", all)
		}
		denied, err := db.QueryAudit(ctx, storage.AuditQuery{Rule: "working-hours"})
		must(t, err)
		if len(denied) != 1 || denied[0].DeviceID != "PHONE" {
			t.Fatalf("denials = %+v", denied)
		}
		ranged, err := db.QueryAudit(ctx, storage.AuditQuery{Since: 15, Until: 30, Actor: "cli"})
		must(t, err)
		if len(ranged) != 1 || ranged[0].TS != 30 {
			t.Fatalf("ranged = %+v", ranged)
		}
		page, err := db.QueryAudit(ctx, storage.AuditQuery{AfterID: all[0].ID, Limit: 1})
		must(t, err)
		if len(page) != 1 || page[0].ID != all[1].ID {
			t.Fatalf("page = %+v", page)
		}

		// Emergencies end early or at their time.
		must(t, db.PutEmergency(ctx, storage.Emergency{ID: "e1", Reason: "typhoon", StartsTS: 100, EndsTS: 1000, CreatedBy: bob}))
		must(t, db.PutEmergency(ctx, storage.Emergency{ID: "e2", RoomIDs: []string{"!a:test", "!b:test"}, Reason: "fire", StartsTS: 100, EndsTS: 200, CreatedBy: bob}))
		em, err := db.Emergencies(ctx, 150)
		must(t, err)
		if len(em) != 2 || em[0].RoomIDs == nil || len(em[1].RoomIDs) != 2 {
			t.Fatalf("emergencies at 150 = %+v", em)
		}
		em, err = db.Emergencies(ctx, 250)
		must(t, err)
		if len(em) != 1 || em[0].ID != "e1" {
			t.Fatalf("emergencies at 250 = %+v", em)
		}
		must(t, db.EndEmergency(ctx, "e1", 300))
		em, err = db.Emergencies(ctx, 300)
		must(t, err)
		if len(em) != 0 {
			t.Fatalf("ended emergency still listed: %+v", em)
		}
		wantErr(t, db.EndEmergency(ctx, "nope", 300), storage.ErrNotFound)

		// Exemptions.
		must(t, db.PutExemption(ctx, storage.Exemption{UserID: alice, Reason: "危機管理課", CreatedBy: bob, CreatedTS: 1}))
		must(t, db.PutExemption(ctx, storage.Exemption{UserID: alice, Reason: "crisis team", CreatedBy: bob, CreatedTS: 2}))
		ex, err := db.Exemptions(ctx)
		must(t, err)
		if len(ex) != 1 || ex[0].Reason != "crisis team" {
			t.Fatalf("exemptions = %+v", ex)
		}
		must(t, db.DeleteExemption(ctx, alice))
		wantErr(t, db.DeleteExemption(ctx, alice), storage.ErrNotFound)

		// Settings.
		_, err = db.GetSetting(ctx, "policy")
		wantErr(t, err, storage.ErrNotFound)
		must(t, db.PutSetting(ctx, "policy", []byte(`{"a":1}`), 1))
		must(t, db.PutSetting(ctx, "policy", []byte(`{"a":2}`), 2))
		v, err := db.GetSetting(ctx, "policy")
		must(t, err)
		if string(v) != `{"a":2}` {
			t.Fatalf("setting = %s", v)
		}
		must(t, db.DeleteSetting(ctx, "policy"))

		// Groups.
		must(t, db.SetUserGroups(ctx, alice, []string{"総務課", "防災"}))
		must(t, db.SetUserGroups(ctx, bob, []string{"防災"}))
		must(t, db.SetUserGroups(ctx, alice, []string{"防災"}))
		members, err := db.GroupMembers(ctx, "防災")
		must(t, err)
		deepEqual(t, "group members", members, []string{alice, bob})
		gs, err := db.UserGroups(ctx, alice)
		must(t, err)
		deepEqual(t, "alice's groups", gs, []string{"防災"})

		// Notice rooms.
		_, err = db.GetNoticeRoom(ctx, alice)
		wantErr(t, err, storage.ErrNotFound)
		must(t, db.PutNoticeRoom(ctx, alice, roomID))
		r, err := db.GetNoticeRoom(ctx, alice)
		must(t, err)
		if r != roomID {
			t.Fatalf("notice room = %q", r)
		}

		// Broadcasts: delivered and read counts follow receipts.
		createRoom(t, db) // $create at 1, $join at 2
		must(t, db.PutBroadcast(ctx, storage.Broadcast{ID: "b1", Sender: bob, Body: "避難訓練", CreatedTS: 5, Recipients: 2}))
		must(t, db.PutBroadcastDelivery(ctx, storage.BroadcastDelivery{BroadcastID: "b1", UserID: alice, RoomID: roomID, EventID: "$join", Pos: 2}))
		must(t, db.PutBroadcastDelivery(ctx, storage.BroadcastDelivery{BroadcastID: "b1", UserID: bob, RoomID: roomID, EventID: "$join", Pos: 2}))
		counts, err := db.BroadcastCounts(ctx, "b1")
		must(t, err)
		deepEqual(t, "counts before reading", counts, storage.BroadcastCounts{Delivered: 2, Joined: 1})
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: alice, Type: "m.read", EventID: "$create", TS: 1, Pos: 10}))
		counts, _ = db.BroadcastCounts(ctx, "b1")
		deepEqual(t, "counts after a receipt before the notice", counts, storage.BroadcastCounts{Delivered: 2, Joined: 1})
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: alice, Type: "m.read", EventID: "$join", TS: 2, Pos: 11}))
		counts, _ = db.BroadcastCounts(ctx, "b1")
		deepEqual(t, "counts after alice read", counts, storage.BroadcastCounts{Delivered: 2, Joined: 1, Read: 1})
		b, err := db.GetBroadcast(ctx, "b1")
		must(t, err)
		if b.Body != "避難訓練" || b.Recipients != 2 {
			t.Fatalf("broadcast = %+v", b)
		}
		list, err := db.ListBroadcasts(ctx, 10)
		must(t, err)
		if len(list) != 1 {
			t.Fatalf("broadcasts = %+v", list)
		}
	})
}
