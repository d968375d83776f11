package dialect

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTypesHas(t *testing.T) {
	ts := Types{"response.done", "error"}
	for typ, want := range map[string]bool{
		"response.done": true,
		"error":         true,
		"response.don":  false,
		"errors":        false,
		"":              false,
	} {
		if got := ts.Has([]byte(typ)); got != want {
			t.Errorf("Has(%q) = %v, want %v", typ, got, want)
		}
	}
	if (Types(nil)).Has([]byte("error")) {
		t.Error("an empty set has a type")
	}
	typ := []byte("error")
	if n := testing.AllocsPerRun(100, func() { ts.Has(typ) }); n != 0 {
		t.Errorf("Has allocates %v times", n)
	}
}
