package federation

import "encoding/json"

// KeysResult is users' published keys, as /keys/query and federation's
// /user/keys/query answer them.
type KeysResult struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys,omitempty"`
}

// Merge adds another server's answer, for the users asked of it only: a
// server speaks for its own users.
func (k *KeysResult) Merge(o KeysResult, asked map[string][]string) {
	for u := range asked {
		if devs := o.DeviceKeys[u]; devs != nil {
			k.DeviceKeys[u] = devs
		}
		if key := o.MasterKeys[u]; key != nil {
			k.MasterKeys[u] = key
		}
		if key := o.SelfSigningKeys[u]; key != nil {
			k.SelfSigningKeys[u] = key
		}
	}
}

// DeviceList is a local user's devices as federation's /user/devices
// answers: each device with its keys, and the user's cross-signing keys.
type DeviceList struct {
	UserID   string            `json:"user_id"`
	StreamID int64             `json:"stream_id"`
	Devices  []DeviceListEntry `json:"devices"`
	Master   json.RawMessage   `json:"master_key,omitempty"`
	Self     json.RawMessage   `json:"self_signing_key,omitempty"`
}

// DeviceListEntry is one device of a DeviceList.
type DeviceListEntry struct {
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// DeviceListUpdate is the content of an m.device_list_update EDU.
type DeviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}
