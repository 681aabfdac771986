package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// hs is a minimal Matrix client for load: plain net/http with keep-alive,
// just the calls the scenarios need, so the client's own cost stays small
// next to the server's. It speaks only the spec, so any homeserver with
// open registration can be measured.
type hs struct {
	base string
	http *http.Client
}

func newHS(base string) *hs {
	tr := &http.Transport{
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &hs{base: base, http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

type user struct {
	ID    string
	Token string
	txn   atomic.Int64
}

// matrixError is a non-2xx answer.
type matrixError struct {
	Status int
	Body   string
}

func (e *matrixError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

func (c *hs) do(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &matrixError{Status: resp.StatusCode, Body: string(data)}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// register creates a user with the m.login.dummy stage, asking first for a
// session as servers that follow user-interactive auth require.
func (c *hs) register(ctx context.Context, name, password string) (*user, error) {
	var session string
	err := c.do(ctx, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": name, "password": password}, nil)
	if me, ok := err.(*matrixError); ok && me.Status == http.StatusUnauthorized {
		var uia struct {
			Session string `json:"session"`
		}
		_ = json.Unmarshal([]byte(me.Body), &uia)
		session = uia.Session
	} else if err != nil {
		return nil, err
	}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	err = c.do(ctx, "POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": name, "password": password,
		"auth": map[string]any{"type": "m.login.dummy", "session": session},
	}, &resp)
	if err != nil {
		return nil, err
	}
	return &user{ID: resp.UserID, Token: resp.AccessToken}, nil
}

func (c *hs) createRoom(ctx context.Context, u *user, invite []string) (string, error) {
	var resp struct {
		RoomID string `json:"room_id"`
	}
	err := c.do(ctx, "POST", "/_matrix/client/v3/createRoom", u.Token, map[string]any{
		"preset": "public_chat", "name": "bench", "invite": invite,
	}, &resp)
	return resp.RoomID, err
}

func (c *hs) join(ctx context.Context, u *user, roomID string) error {
	return c.do(ctx, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), u.Token, map[string]any{}, nil)
}

// send posts one text message stamped with its send time, which receivers
// use to measure send→sync delivery (client and receivers share a clock).
func (c *hs) send(ctx context.Context, u *user, roomID, run string, seq int64) error {
	txn := strconv.FormatInt(u.txn.Add(1), 10) + "-" + url.PathEscape(run)
	return c.do(ctx, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn, u.Token, map[string]any{
		"msgtype": "m.text", "body": "bench message " + strconv.FormatInt(seq, 10),
		"bench_run": run, "bench_ts": time.Now().UnixMicro(), // canonical JSON: integers below 2^53
	}, nil)
}

// syncResp is the part of a /sync response the bench reads.
type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Type    string `json:"type"`
					Content struct {
						Run string `json:"bench_run"`
						TS  int64  `json:"bench_ts"` // µs since the epoch
					} `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// syncFilter keeps long-poll responses to the timeline, as a bench
// receiver has no use for the rest; the limit is high so a burst between
// two polls is not cut.
const syncFilter = `{"room":{"timeline":{"limit":200},"state":{"lazy_load_members":true},"ephemeral":{"not_types":["*"]}},"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]}}`

func (c *hs) sync(ctx context.Context, u *user, since string, timeout time.Duration, filter string) (*syncResp, int, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	if filter != "" {
		q.Set("filter", filter)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+u.Token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != 200 {
		return nil, 0, &matrixError{Status: resp.StatusCode, Body: string(data)}
	}
	var out syncResp
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, 0, err
	}
	return &out, len(data), nil
}

// ready polls /versions until the server answers, returning how long it
// took.
func (c *hs) ready(ctx context.Context, start time.Time) (time.Duration, error) {
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", c.base+"/_matrix/client/versions", nil)
		resp, err := c.http.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(start), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("server not ready: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}
