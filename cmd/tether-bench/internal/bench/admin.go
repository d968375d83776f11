package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// adminClient talks to a tether admin listener (host:port).
type adminClient struct {
	addr string
	hc   *http.Client
}

func newAdminClient(addr string) *adminClient {
	return &adminClient{addr: addr, hc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
}

func (a *adminClient) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return resp, nil
}

// gc forces a garbage collection in tether (the heap profile's gc=1), so that
// memory figures do not depend on where the collector happens to be.
func (a *adminClient) gc(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := a.get(ctx, "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// RuntimeStats are Go runtime gauges scraped from tether's /metrics.
type RuntimeStats struct {
	Goroutines     float64 `json:"goroutines"`
	HeapInuseBytes float64 `json:"heap_inuse_bytes"`
	StackInuse     float64 `json:"stack_inuse_bytes"`
	Sessions       float64 `json:"sessions_active"`
}

// runtimeStats scrapes the Go collector's gauges.
func (a *adminClient) runtimeStats(ctx context.Context) (RuntimeStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := a.get(ctx, "/metrics")
	if err != nil {
		return RuntimeStats{}, err
	}
	defer resp.Body.Close()
	var rs RuntimeStats
	want := map[string]*float64{
		"go_goroutines":                 &rs.Goroutines,
		"go_memstats_heap_inuse_bytes":  &rs.HeapInuseBytes,
		"go_memstats_stack_inuse_bytes": &rs.StackInuse,
		"tether_sessions_active":        &rs.Sessions,
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		name, _, _ = strings.Cut(name, "{") // labelled series (dialect=...) add up
		if p, ok := want[name]; ok {
			val = val[strings.LastIndexByte(val, '}')+1:]
			val, _, _ = strings.Cut(strings.TrimSpace(val), " ") // drop a timestamp or exemplar
			if v, err := strconv.ParseFloat(val, 64); err == nil {
				*p += v
			}
		}
	}
	return rs, sc.Err()
}

// cpuProfile writes tether's CPU profile over the next d to file.
func (a *adminClient) cpuProfile(ctx context.Context, d time.Duration, file string) error {
	secs := max(int(d.Seconds()), 1)
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	resp, err := a.get(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
