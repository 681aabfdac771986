package clientapi

import "testing"

func TestFoldAndMatch(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"山田　太郎", "山田太郎"},
		{"ＳＡＴＯ", "sato"},
		{"ｹﾝｼﾞ", "けんじ"}, // half-width katakana
		{"ケンジ", "けんじ"},
		{"Yamada Hanako", "yamadahanako"},
	} {
		if got := foldSearch(tc.in); got != tc.want {
			t.Errorf("foldSearch(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		term, userID, name string
		rank               int
		ok                 bool
	}{
		{"taro", "@taro:city.jp", "山田 太郎", 0, true},
		{"山田太郎", "@t:city.jp", "山田 太郎", 0, true},
		{"tar", "@taro:city.jp", "", 1, true},
		{"山田", "@t:city.jp", "山田 太郎", 1, true},
		{"太郎", "@t:city.jp", "山田 太郎", 2, true},
		{"city", "@t:city.jp", "", 2, true},
		{"花子", "@t:city.jp", "山田 太郎", 0, false},
		{"", "@t:city.jp", "", 2, true},
	} {
		rank, ok := matchUser(foldSearch(tc.term), tc.userID, tc.name)
		if rank != tc.rank || ok != tc.ok {
			t.Errorf("matchUser(%q, %q, %q) = %d, %v; want %d, %v", tc.term, tc.userID, tc.name, rank, ok, tc.rank, tc.ok)
		}
	}
}
