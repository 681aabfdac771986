package sqlstore_test

import (
	"context"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestRemoteDeviceLists(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const ann, ben = "@ann:remote.test", "@ben:remote.test"

		got, err := db.RemoteDeviceLists(ctx, []string{ann})
		must(t, err)
		if len(got) != 0 {
			t.Fatalf("nothing cached yet: %v", got)
		}
		wantErr(t, db.UpdateRemoteDevice(ctx, ann, 2, storage.RemoteDevice{DeviceID: "D1"}, false), storage.ErrNotFound)

		must(t, db.PutRemoteDeviceList(ctx, storage.RemoteDeviceList{UserID: ann, StreamID: 5, Master: []byte(`{"m":1}`),
			Devices: []storage.RemoteDevice{{DeviceID: "D1", DisplayName: "phone", Keys: []byte(`{"k":1}`)}, {DeviceID: "D2"}}}))
		must(t, db.MarkRemoteDeviceListStale(ctx, ann))
		got, _ = db.RemoteDeviceLists(ctx, []string{ann, ben})
		l := got[ann]
		if len(got) != 1 || l.StreamID != 5 || !l.Stale || string(l.Master) != `{"m":1}` || l.SelfSigning != nil || len(l.Devices) != 2 ||
			l.Devices[0].DisplayName != "phone" || string(l.Devices[0].Keys) != `{"k":1}` || l.Devices[1].Keys != nil {
			t.Fatalf("cached list: %+v", got)
		}

		// One update at a time: a device replaced, one removed, the stream moved on.
		must(t, db.UpdateRemoteDevice(ctx, ann, 6, storage.RemoteDevice{DeviceID: "D1", DisplayName: "new", Keys: []byte(`{"k":2}`)}, false))
		must(t, db.UpdateRemoteDevice(ctx, ann, 7, storage.RemoteDevice{DeviceID: "D2"}, true))
		must(t, db.PutRemoteCrossSigningKeys(ctx, ann, nil, []byte(`{"s":1}`)))
		must(t, db.PutRemoteCrossSigningKeys(ctx, ben, []byte(`{"m":2}`), nil)) // not cached: nothing
		got, _ = db.RemoteDeviceLists(ctx, []string{ann, ben})
		l = got[ann]
		if len(got) != 1 || l.StreamID != 7 || len(l.Devices) != 1 || l.Devices[0].DisplayName != "new" || string(l.Devices[0].Keys) != `{"k":2}` ||
			string(l.Master) != `{"m":1}` || string(l.SelfSigning) != `{"s":1}` {
			t.Fatalf("after updates: %+v", got)
		}

		// A resync replaces the whole list and clears stale.
		must(t, db.PutRemoteDeviceList(ctx, storage.RemoteDeviceList{UserID: ann, StreamID: 9, Devices: []storage.RemoteDevice{{DeviceID: "D3"}}}))
		got, _ = db.RemoteDeviceLists(ctx, []string{ann})
		l = got[ann]
		if l.StreamID != 9 || l.Stale || l.Master != nil || len(l.Devices) != 1 || l.Devices[0].DeviceID != "D3" {
			t.Fatalf("after resync: %+v", l)
		}
		must(t, db.DeleteRemoteDeviceList(ctx, ann))
		got, _ = db.RemoteDeviceLists(ctx, []string{ann})
		if len(got) != 0 {
			t.Fatalf("deleted list still cached: %+v", got)
		}

		// prev_id of a local user's updates.
		const alice = "@alice:test"
		must(t, db.AddDeviceListChange(ctx, alice, 10))
		must(t, db.AddDeviceListChange(ctx, alice, 14))
		for before, want := range map[int64]int64{10: 0, 11: 10, 14: 10, 15: 14} {
			if prev, err := db.PrevDeviceListChange(ctx, alice, before); err != nil || prev != want {
				t.Fatalf("prev before %d: %d, %v; want %d", before, prev, err, want)
			}
		}
	})
}
