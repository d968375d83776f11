package bench

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{
		"1350": 1350, "1.3KB": 1300, "1.3kb": 1300, "15MiB": 15 << 20, "15 MiB": 15 << 20,
		"64KiB": 64 << 10, "2MB": 2_000_000, "100B": 100, "4k": 4096, "1m": 1 << 20,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-5", "1.3XB", "NaN", "9999999GiB", "1e30"} {
		if n, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, n)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"ws://127.0.0.1:8080/v1/realtime", "ws://localhost:1/x", "ws://[::1]:80/", "ws://127.9.9.9:5/"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"ws://10.0.0.1:8080/", "ws://example.com/", "wss://127.0.0.1/", "http://127.0.0.1/", "::"} {
		if err := checkLoopback(bad); err == nil {
			t.Errorf("%s accepted; only ws:// on loopback may be", bad)
		}
	}
}
