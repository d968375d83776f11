package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/lifecycle"
)

// A resume block replaces the keys it sets; a list replaces the default
// list rather than adding to it; on may be written bare (a string to
// YAML 1.2) or quoted.
func TestLoadResume(t *testing.T) {
	isolateEnv(t)
	for _, on := range []string{"on", `"on"`, "'on'"} {
		cfg, err := Load(writeYAML(t, `
lifecycle:
  resume:
    enabled: true
    `+on+`: [expired, upstream_error]
    max_resumes: 1
    history: {bytes: 4096}
    buffer: 500ms
    notify: false
`))
		if err != nil {
			t.Fatalf("%s: %v", on, err)
		}
		want := Resume{Enabled: true, On: []lifecycle.Trigger{lifecycle.TriggerExpired, lifecycle.TriggerUpstreamError},
			MaxResumes: 1, History: ResumeHistory{Items: DefaultResumeHistoryItems, Bytes: 4096},
			Buffer: 500 * time.Millisecond, Notify: false}
		if got := cfg.Lifecycle.Resume; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: resume = %+v, want %+v", on, got, want)
		}
	}
}

func TestLoadResumeProblems(t *testing.T) {
	isolateEnv(t)
	_, err := Load(writeYAML(t, `
lifecycle:
  resume:
    enabled: true
    on: [expired, Expired, expired]
    max_resumes: 0
    history: {items: 0, byte: 10}
    buffer: 2
`))
	want := []string{
		"lifecycle.resume.buffer",        // a bare number
		"lifecycle.resume.history.byte",  // unknown key
		"lifecycle.resume.history.items", // 0
		"lifecycle.resume.max_resumes",   // 0 while enabled
		"lifecycle.resume.on[1]",         // names are exact
		"lifecycle.resume.on[2]",         // duplicate
	}
	if got := problemPaths(t, err); !slices.Equal(got, want) {
		t.Fatalf("paths = %q, want %q\n%v", got, want, err)
	}
	for path, msg := range map[string]string{
		"lifecycle.resume.buffer":        `must be a duration with a unit, such as "2s"`,
		"lifecycle.resume.history.byte":  "unknown key (valid keys here: items, bytes)",
		"lifecycle.resume.on[1]":         `must be one of expired, upstream_error, upstream_heartbeat_timeout, fatal_event (got "Expired")`,
		"lifecycle.resume.on[2]":         "duplicate of lifecycle.resume.on[0]",
		"lifecycle.resume.max_resumes":   ">= 1 when lifecycle.resume.enabled is true",
		"lifecycle.resume.history.items": ">= 1 (got 0)",
	} {
		if got := problemAt(err, path); !strings.Contains(got, msg) {
			t.Errorf("%s: %q, want it to contain %q", path, got, msg)
		}
	}
}

// Every resume key has its TETHER_LIFECYCLE_RESUME_* override.
func TestLoadResumeEnv(t *testing.T) {
	isolateEnv(t)
	for k, v := range map[string]string{
		"TETHER_LIFECYCLE_RESUME_ENABLED":       "true",
		"TETHER_LIFECYCLE_RESUME_ON":            "expired, fatal_event",
		"TETHER_LIFECYCLE_RESUME_MAX_RESUMES":   "5",
		"TETHER_LIFECYCLE_RESUME_HISTORY_ITEMS": "20",
		"TETHER_LIFECYCLE_RESUME_HISTORY_BYTES": "8192",
		"TETHER_LIFECYCLE_RESUME_BUFFER":        "1500ms",
		"TETHER_LIFECYCLE_RESUME_NOTIFY":        "false",
	} {
		t.Setenv(k, v)
	}
	cfg, err := Load(writeYAML(t, "lifecycle:\n  resume:\n    max_resumes: 2\n    on: [expired]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Resume{Enabled: true, On: []lifecycle.Trigger{lifecycle.TriggerExpired, lifecycle.TriggerFatalEvent},
		MaxResumes: 5, History: ResumeHistory{Items: 20, Bytes: 8192}, Buffer: 1500 * time.Millisecond, Notify: false}
	if got := cfg.Lifecycle.Resume; !reflect.DeepEqual(got, want) {
		t.Errorf("resume = %+v, want %+v", got, want)
	}
}
