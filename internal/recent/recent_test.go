package recent

import (
	"fmt"
	"testing"
)

func TestSet(t *testing.T) {
	s := New(3)
	if !s.First("a") || s.First("a") {
		t.Fatal("a is new once")
	}
	s.Forget("a")
	if !s.First("a") {
		t.Fatal("a forgotten is new again")
	}
	for i := range 3 {
		s.First(fmt.Sprint(i))
	}
	if !s.First("a") {
		t.Fatal("the oldest key is dropped past the bound")
	}
	if s.First("2") {
		t.Fatal("a recent key is kept")
	}
}
