package config

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/upstreams"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestDefaultValues(t *testing.T) {
	// The contract values from design.md, spelled out rather than via the
	// constants, so a changed constant fails here.
	c := Default()
	checks := []struct {
		key       string
		got, want any
	}{
		{"server.listen", c.Server.Listen, "127.0.0.1:8080"},
		{"server.paths", c.Server.Paths, []string{"/v1/realtime"}},
		{"server.handshake_timeout", c.Server.HandshakeTimeout, 10 * time.Second},
		{"server.park_after", c.Server.ParkAfter, time.Second},
		{"server.max_sessions", c.Server.MaxSessions, 10000},
		{"server.max_frame_bytes", c.Server.MaxFrameBytes, int64(16777216)},
		{"server.allowed_origins", c.Server.AllowedOrigins, []string{}},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9090"},
		{"admin.pprof", c.Admin.PProf, true},
		{"auth.mode", string(c.Auth.Mode), "none"},
		{"auth.max_sessions_per_client", c.Auth.MaxSessionsPerClient, 0},
		{"upstreams", c.Upstreams, []upstreams.Config(nil)},
		{"lifecycle.heartbeat.client", c.Lifecycle.Heartbeat.Client, Heartbeat{15 * time.Second, 10 * time.Second}},
		{"lifecycle.heartbeat.upstream", c.Lifecycle.Heartbeat.Upstream, Heartbeat{15 * time.Second, 10 * time.Second}},
		{"lifecycle.idle_timeout", c.Lifecycle.IdleTimeout, 120 * time.Second},
		{"lifecycle.max_duration", c.Lifecycle.MaxDuration, 60 * time.Minute},
		{"lifecycle.drain_timeout", c.Lifecycle.DrainTimeout, 30 * time.Second},
		{"lifecycle.fatal_upstream_errors", c.Lifecycle.FatalUpstreamErrors, []string{"session_expired", "invalid_api_key", "beta_api_shape_disabled"}},
		{"lifecycle.resume", c.Lifecycle.Resume, Resume{
			Enabled: false, On: []lifecycle.Trigger{"expired", "upstream_error", "upstream_heartbeat_timeout", "fatal_event"},
			MaxResumes: 3, History: ResumeHistory{Items: 128, Bytes: 32768}, Buffer: 2 * time.Second, Notify: true,
		}},
		{"tls.mode", string(c.TLS.Mode), "off"},
		{"telemetry.service_name", c.Telemetry.ServiceName, "tether"},
		{"telemetry.traces", c.Telemetry.Traces, Traces{Exporter: "none", Protocol: "grpc", Insecure: true, SampleRatio: 1.0}},
		{"log", c.Log, Log{Level: "info", Format: "json"}},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.key, ch.got, ch.want)
		}
	}
	// Each call is independent.
	c.Server.Paths[0] = "/changed"
	c.Lifecycle.Resume.On[0] = "changed"
	if Default().Server.Paths[0] != "/v1/realtime" || Default().Lifecycle.Resume.On[0] != "expired" ||
		lifecycle.AllTriggers[0] != "expired" {
		t.Error("Default() shares slices between calls")
	}
}

// TestDefaultsYAMLRoundTrip: loading DefaultsYAML validates and gives
// exactly Default().
func TestDefaultsYAMLRoundTrip(t *testing.T) {
	isolateEnv(t)
	got, err := Load(writeYAML(t, string(DefaultsYAML())))
	if err != nil {
		t.Fatalf("Load(DefaultsYAML()) = %v", err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("Load(DefaultsYAML()) =\n%+v\nwant Default() =\n%+v", got, Default())
	}
}

// TestDefaultsYAMLComplete: Load fills absent keys from Default, so the
// round trip alone would not notice a missing key. Decode the file on its
// own, strictly, and compare the set of keys with Config's.
func TestDefaultsYAMLComplete(t *testing.T) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(DefaultsYAML()))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	if !reflect.DeepEqual(&c, Default()) {
		t.Fatalf("DefaultsYAML() alone =\n%+v\nwant Default() =\n%+v", &c, Default())
	}

	var root map[string]any
	if err := yaml.Unmarshal(DefaultsYAML(), &root); err != nil {
		t.Fatal(err)
	}
	var keys []string
	var flatten func(m map[string]any, prefix string)
	flatten = func(m map[string]any, prefix string) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				flatten(sub, joinKey(prefix, k))
				continue
			}
			keys = append(keys, joinKey(prefix, k))
		}
	}
	flatten(root, "")
	slices.Sort(keys)
	want := envKeys() // every key but the upstreams list
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("DefaultsYAML keys =\n%q\nwant\n%q", keys, want)
	}
}

// TestDefaultsYAMLCommented: every key has a comment (above it or at the
// end of its line).
func TestDefaultsYAMLCommented(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal(DefaultsYAML(), &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	var walk func(node *yaml.Node, path string)
	walk = func(node *yaml.Node, path string) {
		switch node.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range node.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(node.Content); i += 2 {
				key, val := node.Content[i], node.Content[i+1]
				p := joinKey(path, key.Value)
				n++
				if strings.TrimSpace(key.HeadComment+key.LineComment+val.LineComment) == "" {
					t.Errorf("%s (line %d) has no comment", p, key.Line)
				} else if !strings.Contains(key.HeadComment+key.LineComment+val.LineComment, key.Value) &&
					key.HeadComment != "" {
					t.Errorf("%s (line %d): comment does not name the key: %q", p, key.Line, key.HeadComment)
				}
				walk(val, p)
			}
		}
	}
	walk(&doc, "")
	if n < len(envKeys()) {
		t.Fatalf("walked %d keys, want at least %d", n, len(envKeys()))
	}
}

// TestDefaultsYAMLUpstreamsExample: the commented-out upstreams section,
// uncommented, is a valid configuration with every upstream key shown.
func TestDefaultsYAMLUpstreamsExample(t *testing.T) {
	isolateEnv(t)
	var example []string
	in := false
	for line := range strings.Lines(string(DefaultsYAML())) {
		switch {
		case strings.HasPrefix(line, "#upstreams:"):
			in = true
		case in && !strings.HasPrefix(line, "#  "):
			in = false
		}
		if in {
			example = append(example, strings.TrimPrefix(line, "#"))
		}
	}
	if len(example) == 0 {
		t.Fatal("no commented-out upstreams example in DefaultsYAML()")
	}
	text := strings.Join(example, "")
	c, err := Load(writeYAML(t, text))
	if err != nil {
		t.Fatalf("example does not load: %v\n%s", err, text)
	}
	if len(c.Upstreams) != 3 {
		t.Fatalf("example has %d upstreams, want 3 (openai, mock, generic)", len(c.Upstreams))
	}
	if got, want := c.Upstreams[0], DefaultUpstream(upstreams.KindOpenAI); !reflect.DeepEqual(got, want) {
		t.Errorf("openai example = %+v, want the defaults %+v", got, want)
	}
	if c.Upstreams[1].Type != upstreams.KindMock || c.Upstreams[2].Type != upstreams.KindGeneric {
		t.Errorf("example types = %q, %q; want mock, generic", c.Upstreams[1].Type, c.Upstreams[2].Type)
	}
	// The openai entry shows every key an upstream has.
	var doc struct {
		Upstreams []map[string]any `yaml:"upstreams"`
	}
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	var shown []string
	for k := range doc.Upstreams[0] {
		shown = append(shown, k)
	}
	slices.Sort(shown)
	all := fieldKeys(reflect.TypeFor[upstreams.Config]())
	slices.Sort(all)
	if !slices.Equal(shown, all) {
		t.Errorf("openai example keys = %q, want %q", shown, all)
	}
}

func TestDefaultsYAMLIsACopy(t *testing.T) {
	b := DefaultsYAML()
	b[0] = 'X'
	if DefaultsYAML()[0] == 'X' {
		t.Fatal("DefaultsYAML() returns shared memory")
	}
}
