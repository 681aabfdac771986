package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultFileLoadsToDefault(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "machi.yaml")
	if err := WriteDefault(path, ""); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.DataDir = dir
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("default file loads to\n%+v\nwant\n%+v", *got, want)
	}
	if err := WriteDefault(path, ""); err == nil {
		t.Fatal("WriteDefault overwrote an existing file")
	}
}

func TestSharedSecretWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "machi.yaml")
	if err := WriteDefault(path, "s3cret"); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Registration.SharedSecret != "s3cret" {
		t.Fatalf("shared secret = %q", got.Registration.SharedSecret)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "sever_name: x\n", "field sever_name not found"},
		{"bad engine", "database: {engine: mysql}\n", `database.engine "mysql"`},
		{"postgres without dsn", "database: {engine: postgres}\n", "postgres_dsn must be set"},
		{"bad listener", "listen: {client: nope}\n", "listen.client"},
		{"bad room version", "rooms: {default_version: \"99\"}\n", "rooms.default_version"},
		{"several at once", "server_name: \"\"\nlog: {level: loud}\n", "log.level"},
		{"not yaml", "server_name: [\n", "yaml"},
		{"bad base url", "listen: {public_base_url: \"matrix.city.jp\"}\n", "listen.public_base_url"},
		{"bad turn uri", "turn: {uris: [\"stun:x:3478\"], shared_secret: s}\n", "turn.uris"},
		{"turn without credentials", "turn: {uris: [\"turn:x:3478\"]}\n", "no credentials"},
		{"turn both credentials", "turn: {uris: [\"turn:x\"], shared_secret: s, username: u, password: p}\n", "not both"},
		{"turn half static", "turn: {uris: [\"turn:x\"], username: u}\n", "set together"},
		{"turn credentials without uris", "turn: {shared_secret: s}\n", "no uris"},
		{"turn bad ttl", "turn: {ttl: 1s}\n", "turn.ttl"},
		{"turn ttl not a duration", "turn: {ttl: soon}\n", "soon"},
		{"presence not a bool", "presence: {enabled: maybe}\n", "maybe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "machi.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "machi.yaml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
}
