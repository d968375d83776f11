package charttest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/config"
	"github.com/tetherproxy/tether/lifecycle"
	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
)

// TestSchemaRejects: a values mistake fails at install time, naming the key.
func TestSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		name, chart, values string
		want                []string
	}{
		{"unknown top-level key", tetherChartDir, "replicas: 3", []string{"additional properties 'replicas' not allowed"}},
		{"typo in a nested key", tetherChartDir, "sidecar: {nativ: true}", []string{"/sidecar", "'nativ' not allowed"}},
		{"typo in a tether config key", tetherChartDir, "config: {lifecycle: {idle_timout: 30s}}", []string{"/config/lifecycle", "'idle_timout' not allowed"}},
		{"bad mode", tetherChartDir, "mode: daemonset", []string{"/mode", "'standalone', 'sidecar'"}},
		{"bad log level", tetherChartDir, "config: {log: {level: verbose}}", []string{"/config/log/level", "'debug', 'info', 'warn', 'error'"}},
		{"bad tls mode", tetherChartDir, "config: {tls: {mode: letsencrypt}}", []string{"/config/tls/mode"}},
		{"bad upstream type", tetherChartDir, "config: {upstreams: [{name: x, type: gemini}]}", []string{"/config/upstreams/0/type", "'openai', 'azure', 'generic', 'mock'"}},
		{"duration without unit", tetherChartDir, "config: {lifecycle: {drain_timeout: 30}}", []string{"/config/lifecycle/drain_timeout"}},
		{"bad duration", tetherChartDir, "config: {lifecycle: {drain_timeout: 30 seconds}}", []string{"/config/lifecycle/drain_timeout", "does not match pattern"}},
		{"bad state backend", tetherChartDir, "config: {state: {backend: etcd}}", []string{"/config/state/backend", "'memory', 'redis'"}},
		{"bad redis on_error", tetherChartDir, "config: {state: {redis: {on_error: retry}}}", []string{"/config/state/redis/on_error", "'fail_open', 'fail_closed'"}},
		{"redis url not redis", tetherChartDir, "config: {state: {redis: {url: 'http://redis:6379'}}}", []string{"/config/state/redis/url", "does not match pattern"}},
		{"typo in a state key", tetherChartDir, "config: {state: {redis: {lease_tll: 15s}}}", []string{"/config/state/redis", "'lease_tll' not allowed"}},
		{"unknown resume trigger", tetherChartDir, "config: {lifecycle: {resume: {\"on\": [expired, session_expired]}}}", []string{"/config/lifecycle/resume/on/1", "'expired', 'upstream_error', 'upstream_heartbeat_timeout', 'fatal_event'"}},
		{"unknown resume trigger, bare on", tetherChartDir, "config: {lifecycle: {resume: {on: [reset]}}}", []string{"/config/lifecycle/resume/true/0"}},
		{"resume trigger twice", tetherChartDir, "config: {lifecycle: {resume: {\"on\": [expired, expired]}}}", []string{"/config/lifecycle/resume/on", "items at 0 and 1 are equal"}},
		{"typo in a resume key", tetherChartDir, "config: {lifecycle: {resume: {max_resume: 3}}}", []string{"/config/lifecycle/resume", "'max_resume' not allowed"}},
		{"resume history zero", tetherChartDir, "config: {lifecycle: {resume: {history: {bytes: 0}}}}", []string{"/config/lifecycle/resume/history/bytes", "minimum"}},
		{"resume buffer without unit", tetherChartDir, "config: {lifecycle: {resume: {buffer: 2}}}", []string{"/config/lifecycle/resume/buffer"}},
		{"negative budget", tetherChartDir, "config: {limits: {tokens_per_day: -1}}", []string{"/config/limits/tokens_per_day", "minimum"}},
		{"fractional session count", tetherChartDir, "config: {limits: {max_sessions: 1.5}}", []string{"/config/limits/max_sessions", "integer"}},
		{"negative budget in an override", tetherChartDir, "config: {limits: {overrides: {web-app: {cost_per_day: -5}}}}", []string{"/config/limits/overrides/web-app/cost_per_day", "minimum"}},
		{"unknown key in an override", tetherChartDir, "config: {limits: {overrides: {web-app: {max_sesions: 5}}}}", []string{"/config/limits/overrides/web-app", "'max_sesions' not allowed"}},
		{"window in an override", tetherChartDir, "config: {limits: {overrides: {web-app: {window: 1h}}}}", []string{"/config/limits/overrides/web-app", "'window' not allowed"}},
		{"client_metrics in an override", tetherChartDir, "config: {limits: {overrides: {web-app: {client_metrics: true}}}}", []string{"/config/limits/overrides/web-app", "'client_metrics' not allowed"}},
		{"limits window without unit", tetherChartDir, "config: {limits: {window: 24}}", []string{"/config/limits/window"}},
		{"negative price", tetherChartDir, "config: {pricing: {gpt-realtime: {output_text: -16}}}", []string{"/config/pricing/gpt-realtime/output_text", "minimum"}},
		{"unknown key in a price", tetherChartDir, "config: {pricing: {gpt-realtime: {output: 16}}}", []string{"/config/pricing/gpt-realtime", "'output' not allowed"}},
		{"unknown alert", tetherChartDir, "prometheusRule: {alerts: {TetherSessionError: {enabled: false}}}", []string{"/prometheusRule/alerts", "'TetherSessionError' not allowed"}},
		{"alert duration Prometheus cannot read", tetherChartDir, "prometheusRule: {alerts: {TetherSpansDropped: {for: 1.5m}}}", []string{"/prometheusRule/alerts/TetherSpansDropped/for", "does not match pattern"}},
		{"negative alert threshold", tetherChartDir, "prometheusRule: {alerts: {TetherSessionErrors: {threshold: -1}}}", []string{"/prometheusRule/alerts/TetherSessionErrors/threshold"}},
		{"subchart typo from the app chart", exampleChartDir, "tether: {upstream: {existingSecrets: openai}}", []string{"tether:", "/upstream", "'existingSecrets' not allowed"}},
		{"subchart bad enum from the app chart", exampleChartDir, "tether: {mode: both}", []string{"tether:", "/mode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(tc.chart, tc.values, "")
			if err == nil {
				t.Fatalf("values %q rendered; want a schema error", tc.values)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestImpossibleCombinations: values that cannot work fail with a message
// that says what to change.
func TestImpossibleCombinations(t *testing.T) {
	for _, tc := range []struct {
		name, chart, values, kube, want string
	}{
		{"acme without storage", tetherChartDir, "config: {tls: {mode: acme, acme: {domains: [a.example.com]}}}", "",
			"config.tls.mode acme needs a storage volume"},
		{"acme in a sidecar", tetherChartDir, "mode: sidecar\nacmeStorage: {enabled: true}\nconfig: {tls: {mode: acme}}", "",
			"config.tls.mode acme needs mode standalone"},
		{"acme on RWO storage with replicas", tetherChartDir, "replicaCount: 3\nacmeStorage: {enabled: true}\nconfig: {tls: {mode: acme}}", "",
			"needs storage all replicas can mount"},
		{"acme storage outside the volume", tetherChartDir, "replicaCount: 1\nacmeStorage: {enabled: true}\nconfig: {tls: {mode: acme, acme: {storage_dir: /data}}}", "",
			"must be under acmeStorage.mountPath"},
		{"tls files without files", tetherChartDir, "config: {tls: {mode: files}}", "",
			"config.tls.mode files needs certificate files"},
		{"grace period not above drain", tetherChartDir, "terminationGracePeriodSeconds: 30\nconfig: {lifecycle: {drain_timeout: 30s}}", "",
			"terminationGracePeriodSeconds (30) must exceed config.lifecycle.drain_timeout (30 s)"},
		{"grace period below a compound drain", tetherChartDir, "terminationGracePeriodSeconds: 60\nconfig: {lifecycle: {drain_timeout: 1m30s}}", "",
			"must exceed config.lifecycle.drain_timeout (90 s)"},
		{"standalone on loopback", tetherChartDir, "config: {server: {listen: 127.0.0.1:8080}}", "",
			"is a loopback address the Service cannot reach"},
		{"admin on loopback", exampleChartDir, "tether: {config: {admin: {listen: 127.0.0.1:9090}}}", "",
			"kubelet probes cannot reach it"},
		{"listen port not the container port", tetherChartDir, "config: {server: {listen: 0.0.0.0:7000}}", "",
			"config.server.listen (0.0.0.0:7000) must use ports.client (8080)"},
		{"secret no upstream reads", tetherChartDir, "upstream: {existingSecret: openai}\nconfig: {upstreams: [{name: local, type: generic, url: 'ws://llm:8000/v1/realtime'}]}", "",
			"no entry of config.upstreams has api_key_env: OPENAI_API_KEY"},
		{"token auth without tokens", tetherChartDir, "config: {auth: {mode: token}}", "",
			"config.auth.mode token needs config.auth.tokens_file"},
		{"service monitor in sidecar mode", tetherChartDir, "mode: sidecar\nmetrics: {serviceMonitor: {enabled: true}}", "",
			"metrics.serviceMonitor needs mode standalone"},
		{"pdb in sidecar mode", exampleChartDir, "tether: {podDisruptionBudget: {enabled: true}}", "",
			"podDisruptionBudget needs mode standalone"},
		{"pdb with both bounds", tetherChartDir, "podDisruptionBudget: {enabled: true, minAvailable: 1, maxUnavailable: 1}", "",
			"set minAvailable or maxUnavailable, not both"},
		{"native sidecar before 1.29", exampleChartDir, "", "v1.28.9",
			"sidecar.native needs Kubernetes 1.29 or newer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(tc.chart, tc.values, tc.kube)
			if err == nil {
				t.Fatalf("rendered; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestUnquotedOff: YAML 1.1 reads `mode: off` as false; the chart accepts
// it and renders "off", which tether understands.
func TestUnquotedOff(t *testing.T) {
	r, err := renderChart(tetherChartDir, "config:\n  tls:\n    mode: off\n", "")
	if err != nil {
		t.Fatal(err)
	}
	_, tetherYAML := tetherConfigMap(t, r)
	if !strings.Contains(tetherYAML, "mode: \"off\"") && !strings.Contains(tetherYAML, "mode: 'off'") {
		t.Errorf("tls.mode not rendered as the string off:\n%s", tetherYAML)
	}
	checkConfig(t, r, tetherYAML)
}

// TestUnquotedOn: YAML 1.1 reads lifecycle.resume's bare `on:` as the key
// true; the chart accepts it and renders it as on, which tether reads as
// the list of triggers.
func TestUnquotedOn(t *testing.T) {
	for _, key := range []string{"on", `"on"`} {
		r, err := renderChart(tetherChartDir, "config:\n  lifecycle:\n    resume:\n      enabled: true\n      "+key+": [expired, fatal_event]\n", "")
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		_, tetherYAML := tetherConfigMap(t, r)
		cfg, err := loadTetherYAML(t, tetherYAML)
		if err != nil {
			t.Fatalf("%s: config.Load: %v\n%s", key, err, tetherYAML)
		}
		if got, want := cfg.Lifecycle.Resume.On, []lifecycle.Trigger{lifecycle.TriggerExpired, lifecycle.TriggerFatalEvent}; !slices.Equal(got, want) {
			t.Errorf("%s: lifecycle.resume.on = %q, want %q\n%s", key, got, want, tetherYAML)
		}
		checkConfig(t, r, tetherYAML)
	}
	_, err := renderChart(tetherChartDir, "config: {lifecycle: {resume: {on: [expired], \"on\": [fatal_event]}}}", "")
	if want := "config.lifecycle.resume.on is set twice"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("on quoted and bare: %v, want an error containing %q", err, want)
	}
}

// TestSchemaMatchesConfigKeys: the schema's config section lists exactly
// the keys tether's config package accepts, so the schema neither rejects a
// valid tether.yaml nor lets a typo through.
func TestSchemaMatchesConfigKeys(t *testing.T) {
	data, err := os.ReadFile(tetherChartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	cfgSchema := schema["properties"].(map[string]any)["config"].(map[string]any)
	compareKeys(t, "config", cfgSchema, reflect.TypeFor[config.Config]())
}

var durationType = reflect.TypeFor[time.Duration]()

// schemaOmits are keys of a Go config type that the schema leaves out at a
// path because tether refuses them there (TestSchemaOmitsWhatTetherRefuses
// checks that it does). "*" stands for any key of a map.
var schemaOmits = map[string][]string{
	"config.limits.overrides.*": {"window", "boundary_timeout", "client_metrics", "overrides"},
}

// schemaAliases are keys the schema accepts at a path beside tether's own,
// as another spelling of one of them that the chart renders under tether's
// name (TestUnquotedOn checks that it does): alias -> key.
var schemaAliases = map[string]map[string]string{
	// YAML 1.1, which Helm reads values with, reads a bare on as true.
	"config.lifecycle.resume": {"true": "on"},
}

func compareKeys(t *testing.T, path string, s map[string]any, typ reflect.Type) {
	t.Helper()
	switch {
	case typ == durationType:
		return
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Struct:
		items, _ := s["items"].(map[string]any)
		if items == nil {
			t.Errorf("%s: schema has no items for a list of %s", path, typ.Elem().Name())
			return
		}
		compareKeys(t, path+"[]", items, typ.Elem())
		return
	case typ.Kind() == reflect.Map && typ.Elem().Kind() == reflect.Struct:
		values, _ := s["additionalProperties"].(map[string]any)
		if values == nil {
			t.Errorf("%s: schema does not describe the values of a map of %s", path, typ.Elem().Name())
			return
		}
		if props, _ := s["properties"].(map[string]any); len(props) > 0 {
			t.Errorf("%s: schema names keys of a map whose keys are the user's", path)
		}
		compareKeys(t, path+".*", values, typ.Elem())
		return
	case typ.Kind() != reflect.Struct:
		return
	}
	if s["additionalProperties"] != false {
		t.Errorf("%s: schema allows additional properties", path)
	}
	props, _ := s["properties"].(map[string]any)
	var goKeys []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		goKeys = append(goKeys, name)
		if slices.Contains(schemaOmits[path], name) {
			if _, ok := props[name]; ok {
				t.Errorf("%s.%s: refused by tether here, allowed by values.schema.json", path, name)
			}
			continue
		}
		sub, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s.%s: accepted by tether, missing from values.schema.json", path, name)
			continue
		}
		compareKeys(t, path+"."+name, sub, f.Type)
	}
	for k := range props {
		if key, alias := schemaAliases[path][k]; alias {
			if !slices.Contains(goKeys, key) || !reflect.DeepEqual(ref(props[k]), ref(props[key])) {
				t.Errorf("%s.%s: an alias of %s, which tether's config does not have or the schema describes otherwise", path, k, key)
			}
			continue
		}
		if !slices.Contains(goKeys, k) {
			t.Errorf("%s.%s: in values.schema.json, unknown to tether's config", path, k)
		}
	}
	for _, k := range schemaOmits[path] {
		if !slices.Contains(goKeys, k) {
			t.Errorf("%s.%s: listed in schemaOmits, unknown to tether's config", path, k)
		}
	}
}

// ref is the definition a schema property refers to, else the property.
func ref(prop any) any {
	if m, ok := prop.(map[string]any); ok && m["$ref"] != nil {
		return m["$ref"]
	}
	return prop
}

// TestSchemaOmitsWhatTetherRefuses: the keys the schema leaves out of a
// limits override are keys tether's config.Load refuses there.
func TestSchemaOmitsWhatTetherRefuses(t *testing.T) {
	values := map[string]string{"window": "1h", "boundary_timeout": "5s", "client_metrics": "true", "overrides": "{other: {max_sessions: 1}}"}
	for _, key := range schemaOmits["config.limits.overrides.*"] {
		v, ok := values[key]
		if !ok {
			t.Fatalf("no test value for %s", key)
		}
		path := filepath.Join(t.TempDir(), "tether.yaml")
		doc := fmt.Sprintf("limits:\n  overrides:\n    web-app: {max_sessions: 5, %s: %s}\n", key, v)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := config.Load(path)
		if want := "limits.overrides[web-app]." + key; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config.Load with %s in an override: %v; want an error naming %s", key, err, want)
		}
	}
}

// TestValuesDocumented: every key of values.yaml carries a comment, except
// inside Kubernetes objects and tether's own config (documented by
// `tether config defaults`).
func TestValuesDocumented(t *testing.T) {
	data, err := os.ReadFile(tetherChartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	opaque := map[string]bool{
		"config": true, "resources": true, "securityContext": true, "podSecurityContext": true,
		"strategy": true, "grafanaDashboard.labels": true, "prometheusRule.labels": true, "prometheusRule.alertLabels": true,
	}
	probeFields := map[string]bool{"periodSeconds": true, "timeoutSeconds": true, "failureThreshold": true}
	alertFields := map[string]bool{"enabled": true, "threshold": true, "for": true, "severity": true}
	var undocumented []string
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			// The fields of probes and of each alert are documented once, above the map.
			shared := (strings.HasPrefix(prefix, "probes.") && probeFields[k.Value]) ||
				(strings.HasPrefix(prefix, "prometheusRule.alerts.") && alertFields[k.Value])
			if strings.TrimSpace(k.HeadComment) == "" && !shared {
				undocumented = append(undocumented, path)
			}
			if v.Kind == yaml.MappingNode && !opaque[path] {
				walk(v, path)
			}
		}
	}
	walk(doc.Content[0], "")
	sort.Strings(undocumented)
	if len(undocumented) > 0 {
		t.Errorf("values.yaml keys without a comment: %s", strings.Join(undocumented, ", "))
	}
}

// TestLint runs helm lint on the chart, with its defaults and in sidecar
// mode, and fails on warnings as well as errors.
func TestLint(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(defaultKube)
	if err != nil {
		t.Fatal(err)
	}
	for _, values := range []map[string]any{nil, {"mode": "sidecar"}} {
		l := lint.AllWithKubeVersion(tetherChartDir, values, namespace, kv)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("helm lint (values %v): %s", values, m)
			}
		}
	}
}
