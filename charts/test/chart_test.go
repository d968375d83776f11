package charttest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherproxy/tether/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

// role is where the tether container sits in a pod.
type role int

const (
	roleMain    role = iota // the standalone Deployment's only container
	roleNative              // initContainers, restartPolicy Always
	roleClassic             // containers, next to the app
)

// renderCase is one values case rendered, checked and kept as golden files
// testdata/<name>.yaml and testdata/<name>.notes.txt.
type renderCase struct {
	name   string
	chart  string
	kube   string
	values string
	role   role // of the tether container in the workload
	check  func(t *testing.T, r *rendered)
}

var renderCases = []renderCase{
	{
		name:  "default",
		chart: tetherChartDir,
		role:  roleMain,
		check: func(t *testing.T, r *rendered) {
			d := one[appsv1.Deployment](t, r)
			if *d.Spec.Replicas != 2 {
				t.Errorf("replicas = %d", *d.Spec.Replicas)
			}
			svc := one[corev1.Service](t, r)
			wantPorts := map[string]string{"client": "8080->tether-client", "admin": "9090->tether-admin"}
			for _, p := range svc.Spec.Ports {
				if got := fmt.Sprintf("%d->%s", p.Port, p.TargetPort.String()); wantPorts[p.Name] != got {
					t.Errorf("service port %s = %s, want %s", p.Name, got, wantPorts[p.Name])
				}
			}
			if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) {
				t.Errorf("service selector %v, deployment selector %v", svc.Spec.Selector, d.Spec.Selector.MatchLabels)
			}
			// No API key: tether must start on its built-in mock, and say so.
			if c := tetherContainer(t, &d.Spec.Template.Spec, roleMain); envVar(c, "OPENAI_API_KEY") != nil {
				t.Error("OPENAI_API_KEY is set without upstream.existingSecret")
			}
			if !strings.Contains(r.notes, "built-in mock") {
				t.Errorf("NOTES do not warn about the mock upstream:\n%s", r.notes)
			}
			checkTalkTest(t, r, "ws://t-tether:8080/v1/realtime?model=gpt-realtime")
			if sa := one[corev1.ServiceAccount](t, r); d.Spec.Template.Spec.ServiceAccountName != sa.Name ||
				d.Spec.Template.Spec.AutomountServiceAccountToken == nil || *d.Spec.Template.Spec.AutomountServiceAccountToken {
				t.Errorf("pod uses service account %q (token mounted: %v), want %q without a token",
					d.Spec.Template.Spec.ServiceAccountName, d.Spec.Template.Spec.AutomountServiceAccountToken, sa.Name)
			}
			if len(objectsOf[policyv1.PodDisruptionBudget](r)) != 0 || len(objectsOf[monitoringv1.ServiceMonitor](r)) != 0 ||
				len(objectsOf[monitoringv1.PrometheusRule](r)) != 0 {
				t.Error("optional objects rendered by default")
			}
		},
	},
	{
		name:  "standalone-openai",
		chart: tetherChartDir,
		role:  roleMain,
		values: `
replicaCount: 3
upstream:
  existingSecret: openai
service:
  type: LoadBalancer
config:
  server:
    listen: 0.0.0.0:8080
    allowed_origins: ["https://voice.example.com"]
  admin:
    listen: 0.0.0.0:9090
  upstreams:
    - name: openai
      type: openai
      url: wss://api.openai.com/v1/realtime
      api_key_env: OPENAI_API_KEY
      dial_timeout: 5s
    - name: fallback
      type: mock
  lifecycle:
    drain_timeout: 2m
  log:
    level: debug
    format: text
`,
		check: func(t *testing.T, r *rendered) {
			d := one[appsv1.Deployment](t, r)
			c := tetherContainer(t, &d.Spec.Template.Spec, roleMain)
			ev := envVar(c, "OPENAI_API_KEY")
			if ev == nil || ev.ValueFrom == nil || ev.ValueFrom.SecretKeyRef == nil ||
				ev.ValueFrom.SecretKeyRef.Name != "openai" || ev.ValueFrom.SecretKeyRef.Key != "OPENAI_API_KEY" {
				t.Errorf("OPENAI_API_KEY = %+v, want from secret openai/OPENAI_API_KEY", ev)
			}
			if got := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; got != 135 {
				t.Errorf("terminationGracePeriodSeconds = %d, want 2m + 15 s = 135", got)
			}
			if svc := one[corev1.Service](t, r); svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
				t.Errorf("service type %s", svc.Spec.Type)
			}
			if strings.Contains(r.notes, "built-in mock") {
				t.Error("NOTES warn about the mock although a key is configured")
			}
		},
	},
	{
		name:  "sidecar-native",
		chart: exampleChartDir,
		role:  roleNative,
		check: func(t *testing.T, r *rendered) {
			d := one[appsv1.Deployment](t, r)
			spec := &d.Spec.Template.Spec
			if len(spec.InitContainers) != 1 {
				t.Fatalf("%d init containers, want only tether", len(spec.InitContainers))
			}
			if len(spec.Containers) != 1 || spec.Containers[0].Name != "app" {
				t.Fatalf("containers = %v, want only the app", containerNames(spec.Containers))
			}
			// The app reaches tether on the pod's loopback, where it listens.
			if ev := envVar(&spec.Containers[0], "OPENAI_REALTIME_URL"); ev == nil || ev.Value != "ws://localhost:8080/v1/realtime?model=gpt-realtime" {
				t.Errorf("app OPENAI_REALTIME_URL = %+v", ev)
			}
			// drain 20s + 15 s margin + the app's own 10 s.
			if got := *spec.TerminationGracePeriodSeconds; got != 45 {
				t.Errorf("terminationGracePeriodSeconds = %d, want 45", got)
			}
			if len(objectsOf[corev1.Service](r)) != 0 || len(objectsOf[corev1.Pod](r)) != 0 {
				t.Error("sidecar mode rendered tether's own Service or test pod")
			}
		},
	},
	{
		name:  "sidecar-classic",
		chart: exampleChartDir,
		kube:  "v1.27.0",
		role:  roleClassic,
		values: `
tether:
  sidecar:
    native: false
`,
		check: func(t *testing.T, r *rendered) {
			spec := &one[appsv1.Deployment](t, r).Spec.Template.Spec
			if len(spec.InitContainers) != 0 {
				t.Errorf("init containers %v in classic mode", containerNames(spec.InitContainers))
			}
			if got := containerNames(spec.Containers); !reflect.DeepEqual(got, []string{"app", "tether"}) {
				t.Errorf("containers = %v, want [app tether]", got)
			}
		},
	},
	{
		name:  "sidecar-chart-only",
		chart: tetherChartDir,
		values: `
mode: sidecar
grafanaDashboard:
  enabled: true
`,
		check: func(t *testing.T, r *rendered) {
			if n := len(objectsOf[appsv1.Deployment](r)) + len(objectsOf[corev1.Service](r)) + len(objectsOf[corev1.Pod](r)); n != 0 {
				t.Errorf("mode sidecar rendered %d workload/service/test objects, want none", n)
			}
			if !strings.Contains(r.notes, `include "tether.sidecarInitContainers"`) {
				t.Errorf("NOTES do not show how to include the sidecar:\n%s", r.notes)
			}
		},
	},
	{
		name:  "acme",
		chart: tetherChartDir,
		role:  roleMain,
		values: `
replicaCount: 1
acmeStorage:
  enabled: true
  size: 2Gi
  storageClassName: fast
service:
  type: LoadBalancer
  port: 443
config:
  tls:
    mode: acme
    acme:
      email: ops@example.com
      domains: ["voice.example.com"]
      http_listen: 0.0.0.0:8081
`,
		check: func(t *testing.T, r *rendered) {
			pvc := one[corev1.PersistentVolumeClaim](t, r)
			if got := pvc.Spec.Resources.Requests.Storage().String(); got != "2Gi" || *pvc.Spec.StorageClassName != "fast" {
				t.Errorf("pvc size %s class %v", got, pvc.Spec.StorageClassName)
			}
			if pvc.Annotations["helm.sh/resource-policy"] != "keep" {
				t.Error("ACME storage is not kept on uninstall")
			}
			spec := &one[appsv1.Deployment](t, r).Spec.Template.Spec
			c := tetherContainer(t, spec, roleMain)
			if m := volumeMount(c, "tether-acme"); m == nil || m.MountPath != "/var/lib/tether/acme" || m.ReadOnly {
				t.Errorf("acme mount = %+v", m)
			}
			if v := volume(spec, "tether-acme"); v == nil || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
				t.Errorf("acme volume = %+v, want claim %s", v, pvc.Name)
			}
			if spec.SecurityContext == nil || spec.SecurityContext.FSGroup == nil || *spec.SecurityContext.FSGroup != 65532 {
				t.Error("no fsGroup: the non-root user cannot write the ACME volume")
			}
			if p := containerPort(c, "tether-acmehttp"); p == nil || p.ContainerPort != 8081 {
				t.Errorf("acme http port = %+v", p)
			}
			svc := one[corev1.Service](t, r)
			ports := map[string]string{}
			for _, p := range svc.Spec.Ports {
				ports[p.Name] = fmt.Sprintf("%d->%s", p.Port, p.TargetPort.String())
			}
			if ports["client"] != "443->tether-client" || ports["acme-http"] != "80->tether-acmehttp" {
				t.Errorf("service ports %v: the CA checks TLS-ALPN on 443 and HTTP-01 on 80", ports)
			}
			checkTalkTest(t, r, "wss://t-tether:443/v1/realtime?model=gpt-realtime")
		},
	},
	{
		name:  "tracing",
		chart: tetherChartDir,
		role:  roleMain,
		values: `
otel:
  endpoint: http://jaeger-collector.observability:4317
  resourceAttributes:
    deployment.environment: staging
`,
		check: func(t *testing.T, r *rendered) {
			c := tetherContainer(t, &one[appsv1.Deployment](t, r).Spec.Template.Spec, roleMain)
			if ev := envVar(c, "OTEL_EXPORTER_OTLP_ENDPOINT"); ev == nil || ev.Value != "http://jaeger-collector.observability:4317" {
				t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT = %+v", ev)
			}
			ra := envVar(c, "OTEL_RESOURCE_ATTRIBUTES")
			if ra == nil || !strings.Contains(ra.Value, "k8s.pod.name=$(K8S_POD_NAME)") || !strings.Contains(ra.Value, "deployment.environment=staging") {
				t.Errorf("OTEL_RESOURCE_ATTRIBUTES = %+v", ra)
			}
			// $(K8S_POD_NAME) expands only from a variable defined earlier.
			if i, j := envIndex(c, "K8S_POD_NAME"), envIndex(c, "OTEL_RESOURCE_ATTRIBUTES"); i < 0 || i > j {
				t.Error("K8S_POD_NAME is not defined before OTEL_RESOURCE_ATTRIBUTES")
			}
			if !strings.Contains(r.notes, "Jaeger") {
				t.Errorf("NOTES say nothing about traces in Jaeger:\n%s", r.notes)
			}
		},
	},
	{
		name:  "monitoring",
		chart: tetherChartDir,
		role:  roleMain,
		values: `
metrics:
  serviceMonitor:
    enabled: true
    interval: 15s
    labels:
      release: kube-prometheus-stack
podDisruptionBudget:
  enabled: true
grafanaDashboard:
  enabled: true
  annotations:
    grafana_folder: Voice
`,
		check: func(t *testing.T, r *rendered) {
			sm := one[monitoringv1.ServiceMonitor](t, r)
			svc := one[corev1.Service](t, r)
			if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" {
				t.Errorf("endpoints %+v", sm.Spec.Endpoints)
			}
			if string(sm.Spec.Endpoints[0].Interval) != "15s" || sm.Labels["release"] != "kube-prometheus-stack" {
				t.Errorf("interval %q labels %v", sm.Spec.Endpoints[0].Interval, sm.Labels)
			}
			for k, v := range sm.Spec.Selector.MatchLabels {
				if svc.Labels[k] != v {
					t.Errorf("ServiceMonitor selects %s=%s; the Service has %q", k, v, svc.Labels[k])
				}
			}
			pdb := one[policyv1.PodDisruptionBudget](t, r)
			if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
				t.Errorf("pdb min %v max %v, want maxUnavailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
			}
			checkDashboard(t, r)
		},
	},
	{
		name:  "alerts",
		chart: tetherChartDir,
		role:  roleMain,
		values: `
prometheusRule:
  enabled: true
  labels:
    release: kube-prometheus-stack
  alertLabels:
    team: voice
    severity: ignored
  alerts:
    TetherSessionErrors:
      threshold: 0.5
      for: 15m
    TetherTimeToFirstAudioHigh:
      threshold: 2.5
      severity: critical
    TetherBudgetExhausted:
      enabled: false
`,
		check: func(t *testing.T, r *rendered) {
			pr := one[monitoringv1.PrometheusRule](t, r)
			if pr.Name != "t-tether" || pr.Labels["release"] != "kube-prometheus-stack" || pr.Labels["app.kubernetes.io/name"] != "tether" {
				t.Errorf("PrometheusRule %s labels %v", pr.Name, pr.Labels)
			}
			rules := map[string]monitoringv1.Rule{}
			for _, g := range pr.Spec.Groups {
				for _, rule := range g.Rules {
					rules[rule.Alert] = rule
				}
			}
			if _, ok := rules["TetherBudgetExhausted"]; ok || len(rules) != 6 {
				t.Errorf("alerts %v, want the 6 enabled ones", alertNames(pr))
			}
			for name, want := range map[string]struct{ tail, dur, severity string }{
				"TetherSessionErrors":        {"> 0.5", "15m", "warning"},
				"TetherTimeToFirstAudioHigh": {"> 2.5", "10m", "critical"},
				"TetherUpstreamUnavailable":  {"> 0.02", "5m", "critical"},
				"TetherUpstreamCoolingDown":  {"== 0", "10m", "warning"},
			} {
				rule := rules[name]
				if !strings.HasSuffix(rule.Expr.String(), want.tail) || rule.For == nil || string(*rule.For) != want.dur ||
					rule.Labels["severity"] != want.severity || rule.Labels["team"] != "voice" {
					t.Errorf("%s: expr %q for %v labels %v, want ... %s for %s severity %s team voice",
						name, rule.Expr.String(), rule.For, rule.Labels, want.tail, want.dur, want.severity)
				}
				if !strings.Contains(rule.Annotations["description"], "{{ $labels.namespace }}") {
					t.Errorf("%s: annotations %v lost Prometheus' templates", name, rule.Annotations)
				}
			}
		},
	},
	{
		// Many replicas holding the limits in one Redis: the password and the
		// tokens come from Secrets, never from the chart's own objects.
		name:  "redis",
		chart: tetherChartDir,
		role:  roleMain,
		values: `
replicaCount: 3
upstream: {existingSecret: openai}
extraEnv:
  - name: REDIS_PASSWORD
    valueFrom: {secretKeyRef: {name: tether-redis, key: password}}
extraVolumes:
  - name: tether-tokens
    secret: {secretName: tether-tokens}   # key "tokens": one token per line, then its label
extraVolumeMounts:
  - {name: tether-tokens, mountPath: /etc/tether-tokens, readOnly: true}
config:
  auth: {mode: token, tokens_file: /etc/tether-tokens/tokens}
  limits:
    max_sessions: 2
    tokens_per_day: 2000000
    overrides: {web-app: {max_sessions: 50}}
  state:
    backend: redis
    redis: {url: "redis://redis.voice.svc:6379", password_env: REDIS_PASSWORD}
`,
		check: func(t *testing.T, r *rendered) {
			d := one[appsv1.Deployment](t, r)
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
				t.Errorf("replicas = %s, want 3", deref(d.Spec.Replicas))
			}
			spec := &d.Spec.Template.Spec
			c := tetherContainer(t, spec, roleMain)

			// tether reads the rendered file as the values meant it.
			_, tetherYAML := tetherConfigMap(t, r)
			cfg, err := loadTetherYAML(t, tetherYAML)
			if err != nil {
				t.Fatalf("config.Load: %v", err)
			}
			if st := cfg.State; st.Backend != config.StateBackendRedis || st.Redis.URL != "redis://redis.voice.svc:6379" ||
				st.Redis.PasswordEnv != "REDIS_PASSWORD" || st.Redis.PasswordFile != "" {
				t.Errorf("state = %+v, want backend redis at redis://redis.voice.svc:6379, password from $REDIS_PASSWORD", st)
			}
			if l := cfg.Limits; l.MaxSessions != 2 || l.TokensPerDay != 2000000 {
				t.Errorf("limits max_sessions %d tokens_per_day %d, want 2 and 2000000", l.MaxSessions, l.TokensPerDay)
			}
			if o, ok := cfg.Limits.Overrides["web-app"]; !ok || o.MaxSessions != 50 || o.TokensPerDay != 2000000 {
				t.Errorf("override web-app = %+v (set: %v), want max_sessions 50 and the inherited tokens_per_day", o, ok)
			}

			// The password reaches tether by reference to the Secret only.
			ev := envVar(c, "REDIS_PASSWORD")
			if ev == nil || ev.Value != "" || ev.ValueFrom == nil || ev.ValueFrom.SecretKeyRef == nil ||
				ev.ValueFrom.SecretKeyRef.Name != "tether-redis" || ev.ValueFrom.SecretKeyRef.Key != "password" {
				t.Errorf("REDIS_PASSWORD = %+v, want from secret tether-redis/password", ev)
			}
			if u, err := url.Parse(cfg.State.Redis.URL); err != nil || u.User != nil {
				t.Errorf("state.redis.url %q carries credentials", cfg.State.Redis.URL)
			}
			// No Secret is rendered (kinds has no type for one: it would fail
			// the render), no container holds a password as a literal value,
			// and no object or file has a password key.
			var pods []*corev1.PodSpec
			for _, dep := range objectsOf[appsv1.Deployment](r) {
				pods = append(pods, &dep.Spec.Template.Spec)
			}
			for _, p := range objectsOf[corev1.Pod](r) {
				pods = append(pods, &p.Spec)
			}
			for _, p := range pods {
				for _, ct := range slices.Concat(p.InitContainers, p.Containers) {
					for _, e := range ct.Env {
						if strings.Contains(strings.ToUpper(e.Name), "PASSWORD") && e.Value != "" {
							t.Errorf("container %s: %s has a literal value", ct.Name, e.Name)
						}
					}
				}
			}
			if m := passwordKeyRE.FindString(r.manifest); m != "" {
				t.Errorf("rendered manifest holds a password key: %q", m)
			}

			// The tokens file is in the Secret volume mounted where tokens_file
			// points, without subPath so that tether sees the Secret's updates.
			tokens := cfg.Auth.TokensFile
			var mount *corev1.VolumeMount
			for i, m := range c.VolumeMounts {
				if strings.HasPrefix(tokens, strings.TrimSuffix(m.MountPath, "/")+"/") &&
					(mount == nil || len(m.MountPath) > len(mount.MountPath)) {
					mount = &c.VolumeMounts[i]
				}
			}
			if mount == nil {
				t.Fatalf("no volume is mounted where auth.tokens_file %s is", tokens)
			}
			if !mount.ReadOnly || mount.SubPath != "" {
				t.Errorf("tokens mount %+v, want read-only without subPath (a subPath mount never sees the Secret change)", mount)
			}
			v := volume(spec, mount.Name)
			if v == nil || v.Secret == nil || v.Secret.SecretName != "tether-tokens" {
				t.Fatalf("volume %s = %+v, want Secret tether-tokens", mount.Name, v)
			}
			file := strings.TrimPrefix(tokens, strings.TrimSuffix(mount.MountPath, "/")+"/")
			if len(v.Secret.Items) == 0 && strings.Contains(file, "/") {
				t.Errorf("auth.tokens_file %s: a Secret volume without items has no subdirectory %s", tokens, file)
			}
			if len(v.Secret.Items) > 0 && named(v.Secret.Items, func(k *corev1.KeyToPath) string { return k.Path }, file) == nil {
				t.Errorf("Secret volume items %+v do not hold %s", v.Secret.Items, file)
			}

			if strings.Contains(r.notes, perPodLimitsWarning) {
				t.Errorf("NOTES warn about per-pod limits with state.backend redis:\n%s", r.notes)
			}
			if !strings.Contains(r.notes, "the test pod needs a credential") {
				t.Errorf("NOTES do not say helm test needs a token in token mode:\n%s", r.notes)
			}
		},
	},
}

func TestRender(t *testing.T) {
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := renderChart(tc.chart, tc.values, tc.kube)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			golden(t, tc.name+".yaml", r.manifest)
			golden(t, tc.name+".notes.txt", r.notes)

			cm, tetherYAML := tetherConfigMap(t, r)
			checkConfig(t, r, tetherYAML)
			for _, d := range objectsOf[appsv1.Deployment](r) {
				checkTetherPod(t, d, tc.role, cm, tetherYAML)
			}
			for _, d := range r.docs {
				if ns := objectMeta(d.obj).Namespace; ns != namespace {
					t.Errorf("%s: namespace %q, want the release namespace", d.source, ns)
				}
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// tetherConfigMap returns the ConfigMap holding tether.yaml and that file.
func tetherConfigMap(t *testing.T, r *rendered) (*corev1.ConfigMap, string) {
	t.Helper()
	var found *corev1.ConfigMap
	for _, cm := range objectsOf[corev1.ConfigMap](r) {
		if _, ok := cm.Data["tether.yaml"]; ok {
			if found != nil {
				t.Fatalf("two ConfigMaps hold tether.yaml: %s, %s", found.Name, cm.Name)
			}
			found = cm
		}
	}
	if found == nil {
		t.Fatal("no ConfigMap holds tether.yaml")
	}
	return found, found.Data["tether.yaml"]
}

// checkConfig: the rendered tether.yaml is the values' config with the
// chart's documented fill-ins, and tether's own loader accepts it.
func checkConfig(t *testing.T, r *rendered, tetherYAML string) {
	t.Helper()
	var got map[string]any
	if err := yaml.Unmarshal([]byte(tetherYAML), &got); err != nil {
		t.Fatalf("tether.yaml: %v", err)
	}
	want := expectedConfig(t, r.values)
	if !reflect.DeepEqual(normalize(t, got), normalize(t, want)) {
		gj, _ := json.MarshalIndent(got, "", "  ")
		wj, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("tether.yaml is not the values' config:\ngot  %s\nwant %s", gj, wj)
	}

	if _, err := loadTetherYAML(t, tetherYAML); err != nil {
		t.Errorf("tether's config.Load rejects the rendered tether.yaml:\n%v\n--- tether.yaml\n%s", err, tetherYAML)
	}
}

// loadTetherYAML loads a rendered tether.yaml with tether's own config.Load.
func loadTetherYAML(t *testing.T, tetherYAML string) (*config.Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.yaml")
	if err := os.WriteFile(path, []byte(tetherYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(path)
}

// passwordKeyRE finds a YAML key named password, or ending in it such as
// X-Password, in a manifest (tether.yaml included).
var passwordKeyRE = regexp.MustCompile(`(?mi)^[ \t-]*[a-z0-9_-]*password:.*$`)

// perPodLimitsWarning starts the NOTES warning that limits kept in memory
// are per pod.
const perPodLimitsWarning = "WARNING: config.limits with config.state.backend memory"

// TestNotesPerPodLimits: NOTES warn when limits that concern a client's
// whole use (sessions, budgets per window) are counted by each pod alone.
func TestNotesPerPodLimits(t *testing.T) {
	for _, tc := range []struct {
		values string
		warn   bool
	}{
		{"config: {limits: {tokens_per_day: 1000}}", true}, // replicaCount 2
		{"config: {auth: {max_sessions_per_client: 3}}", true},
		{"config: {limits: {overrides: {web-app: {cost_per_day: 5}}}, pricing: {gpt-realtime: {output_text: 16}}}", true},
		{"mode: sidecar\nconfig: {limits: {max_sessions: 2}}", true},
		{"replicaCount: 1\nconfig: {limits: {tokens_per_day: 1000}}", false},
		{"config: {limits: {max_session_tokens: 1000, overrides: {web-app: {max_session_audio_seconds: 60}}}}", false},
		{"config: {limits: {max_sessions: 2}, state: {backend: redis, redis: {url: 'redis://redis:6379'}}}", false},
		{"", false},
	} {
		r, err := renderChart(tetherChartDir, tc.values, "")
		if err != nil {
			t.Fatalf("values %q: %v", tc.values, err)
		}
		if got := strings.Contains(r.notes, perPodLimitsWarning); got != tc.warn {
			t.Errorf("values %q: NOTES warn about per-pod limits: %v, want %v\n%s", tc.values, got, tc.warn, r.notes)
		}
	}
}

// expectedConfig is values.config plus what the chart fills in when the
// user leaves it unset (see values.yaml, key config).
func expectedConfig(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	cfg := normalize(t, v["config"])
	sub := func(m map[string]any, k string) map[string]any {
		if s, ok := m[k].(map[string]any); ok {
			return s
		}
		s := map[string]any{}
		m[k] = s
		return s
	}
	ports := v["ports"].(map[string]any)
	server, admin := sub(cfg, "server"), sub(cfg, "admin")
	if _, ok := server["listen"]; !ok {
		host := "127.0.0.1"
		if v["mode"] == "standalone" {
			host = "0.0.0.0"
		}
		server["listen"] = fmt.Sprintf("%s:%v", host, ports["client"])
	}
	if _, ok := admin["listen"]; !ok {
		admin["listen"] = fmt.Sprintf("0.0.0.0:%v", ports["admin"])
	}
	if tls, ok := cfg["tls"].(map[string]any); ok {
		if tls["mode"] == false {
			tls["mode"] = "off"
		}
		if tls["mode"] == "acme" {
			acme := sub(tls, "acme")
			if _, ok := acme["storage_dir"]; !ok {
				acme["storage_dir"] = v["acmeStorage"].(map[string]any)["mountPath"]
			}
		}
	}
	if lc, ok := cfg["lifecycle"].(map[string]any); ok {
		if resume, ok := lc["resume"].(map[string]any); ok {
			if on, bare := resume["true"]; bare { // YAML 1.1's reading of a bare on
				resume["on"] = on
				delete(resume, "true")
			}
		}
	}
	if otel := v["otel"].(map[string]any); otel["endpoint"] != "" {
		traces := sub(sub(cfg, "telemetry"), "traces")
		if _, ok := traces["exporter"]; !ok {
			traces["exporter"] = "otlp"
		}
	}
	return cfg
}

// normalize deep-copies a YAML/JSON value through JSON, so numbers compare
// equal whatever decoder produced them.
func normalize(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkTetherPod checks the tether container of a workload and its pod:
// placement, image, args, ports, probes, hardening, config volume, grace
// period and checksum annotation.
func checkTetherPod(t *testing.T, d *appsv1.Deployment, want role, cm *corev1.ConfigMap, tetherYAML string) {
	t.Helper()
	spec := &d.Spec.Template.Spec
	c := tetherContainer(t, spec, want)

	switch want {
	case roleNative:
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("native sidecar restartPolicy = %s, want Always", deref(c.RestartPolicy))
		}
	default:
		if c.RestartPolicy != nil {
			t.Errorf("tether in containers has restartPolicy %v", *c.RestartPolicy)
		}
	}
	if c.Image != "tetherproxy/tether:0.1.0" {
		t.Errorf("image = %s", c.Image)
	}
	if want := []string{"serve", "--config", "/etc/tether/tether.yaml"}; !reflect.DeepEqual(c.Args, want) || len(c.Command) != 0 {
		t.Errorf("command %v args %v, want the image's entrypoint with %v", c.Command, c.Args, want)
	}

	var raw struct {
		Server    struct{ Listen string }
		Admin     struct{ Listen string }
		Lifecycle struct {
			DrainTimeout string `json:"drain_timeout"`
		}
	}
	if err := yaml.Unmarshal([]byte(tetherYAML), &raw); err != nil {
		t.Fatal(err)
	}
	client, admin := containerPort(c, "tether-client"), containerPort(c, "tether-admin")
	if client == nil || !strings.HasSuffix(raw.Server.Listen, fmt.Sprintf(":%d", client.ContainerPort)) {
		t.Errorf("client port %+v does not match server.listen %s", client, raw.Server.Listen)
	}
	if admin == nil || raw.Admin.Listen != fmt.Sprintf("0.0.0.0:%d", admin.ContainerPort) {
		t.Errorf("admin port %+v: admin.listen %s must be on every interface for kubelet probes", admin, raw.Admin.Listen)
	}
	wantLoopback := want != roleMain
	if got := strings.HasPrefix(raw.Server.Listen, "127.0.0.1:"); got != wantLoopback {
		t.Errorf("server.listen %s: loopback = %v, want %v (sidecars listen on the pod's loopback only)", raw.Server.Listen, got, wantLoopback)
	}

	probe := func(name string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no %s httpGet probe", name)
			return
		}
		if p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("tether-admin") {
			t.Errorf("%s probe GET %s on %s, want %s on tether-admin", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
		}
	}
	probe("startup", c.StartupProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")
	probe("liveness", c.LivenessProbe, "/healthz")

	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Error("no container securityContext")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot,
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem,
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
		sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0,
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault,
		sc.Privileged != nil && *sc.Privileged:
		j, _ := json.Marshal(sc)
		t.Errorf("securityContext %s: want non-root, read-only root, no privilege escalation, drop ALL, RuntimeDefault seccomp", j)
	}

	m := volumeMount(c, "tether-config")
	if m == nil || m.MountPath != "/etc/tether" || !m.ReadOnly || m.SubPath != "" {
		t.Errorf("config mount = %+v, want /etc/tether read-only (no subPath: tether reloads the file)", m)
	}
	if v := volume(spec, "tether-config"); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
		t.Errorf("config volume = %+v, want ConfigMap %s", v, cm.Name)
	}
	for _, vm := range c.VolumeMounts {
		if volume(spec, vm.Name) == nil {
			t.Errorf("mount %s has no volume in the pod", vm.Name)
		}
	}

	drain, err := time.ParseDuration(raw.Lifecycle.DrainTimeout)
	if err != nil {
		drain = 30 * time.Second // tether's default
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= drain {
		t.Errorf("terminationGracePeriodSeconds %s does not exceed drain_timeout %s", deref(g), drain)
	}

	sum := sha256.Sum256([]byte(strings.TrimSuffix(tetherYAML, "\n")))
	if got := d.Spec.Template.Annotations["checksum/config"]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("checksum/config = %q, want the sha256 of tether.yaml %s", got, hex.EncodeToString(sum[:]))
	}
}

// tetherContainer finds the tether container where role puts it, and
// fails if it is anywhere else too.
func tetherContainer(t *testing.T, spec *corev1.PodSpec, want role) *corev1.Container {
	t.Helper()
	var inInit, inMain *corev1.Container
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == "tether" {
			inInit = &spec.InitContainers[i]
		}
	}
	for i := range spec.Containers {
		if spec.Containers[i].Name == "tether" {
			inMain = &spec.Containers[i]
		}
	}
	switch {
	case want == roleNative && inInit != nil && inMain == nil:
		return inInit
	case want != roleNative && inMain != nil && inInit == nil:
		return inMain
	}
	t.Fatalf("tether container: in initContainers %v, in containers %v; want role %d", inInit != nil, inMain != nil, want)
	return nil
}

// deref formats *p, or "unset".
func deref[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

func containerNames(cs []corev1.Container) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

// named is the item of items whose name (as nameOf reads it) is name, or nil.
func named[T any](items []T, nameOf func(*T) string, name string) *T {
	for i := range items {
		if nameOf(&items[i]) == name {
			return &items[i]
		}
	}
	return nil
}

func envIndex(c *corev1.Container, name string) int {
	for i, e := range c.Env {
		if e.Name == name {
			return i
		}
	}
	return -1
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	return named(c.Env, func(e *corev1.EnvVar) string { return e.Name }, name)
}

func containerPort(c *corev1.Container, name string) *corev1.ContainerPort {
	return named(c.Ports, func(p *corev1.ContainerPort) string { return p.Name }, name)
}

func volumeMount(c *corev1.Container, name string) *corev1.VolumeMount {
	return named(c.VolumeMounts, func(m *corev1.VolumeMount) string { return m.Name }, name)
}

func volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	return named(spec.Volumes, func(v *corev1.Volume) string { return v.Name }, name)
}

func objectMeta(obj any) *struct{ Namespace string } {
	b, _ := json.Marshal(obj)
	var m struct {
		Metadata struct{ Namespace string } `json:"metadata"`
	}
	_ = json.Unmarshal(b, &m)
	return &m.Metadata
}

// checkTalkTest: the helm test pod runs `tether talk` against the Service.
func checkTalkTest(t *testing.T, r *rendered, url string) {
	t.Helper()
	var pod *corev1.Pod
	for _, d := range r.docs {
		if p, ok := d.obj.(*corev1.Pod); ok && d.hook {
			pod = p
		}
	}
	if pod == nil {
		t.Fatal("no helm test pod")
	}
	if pod.Annotations["helm.sh/hook"] != "test" || pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("test pod hook %q restartPolicy %s", pod.Annotations["helm.sh/hook"], pod.Spec.RestartPolicy)
	}
	c := pod.Spec.Containers[0]
	if len(c.Args) < 3 || c.Args[0] != "talk" || c.Args[1] != "--url" || c.Args[2] != url {
		t.Errorf("test pod args %v, want talk --url %s", c.Args, url)
	}
	svc := one[corev1.Service](t, r)
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			return
		}
	}
	t.Error("the Service selects the test pod")
}

// checkDashboard: the dashboard ConfigMap holds Grafana JSON whose queries
// use the contract's metric names.
func checkDashboard(t *testing.T, r *rendered) {
	t.Helper()
	var data string
	for _, cm := range objectsOf[corev1.ConfigMap](r) {
		if s, ok := cm.Data["tether.json"]; ok {
			data = s
			if cm.Labels["grafana_dashboard"] != "1" {
				t.Errorf("dashboard labels %v lack grafana_dashboard: \"1\"", cm.Labels)
			}
		}
	}
	var dash struct {
		Title  string
		UID    string
		Panels []struct {
			Type    string
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal([]byte(data), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs strings.Builder
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
		}
	}
	for _, metric := range []string{
		"tether_sessions_active", "tether_sessions_total", "tether_session_duration_seconds_bucket",
		"tether_bytes_total", "tether_upstream_dial_seconds_bucket", "tether_heartbeat_rtt_seconds_bucket",
		"tether_time_to_first_audio_seconds_bucket", "tether_tokens_total", "tether_audio_seconds_total",
		"tether_upstream_available", "tether_heartbeat_timeouts_total", "tether_spans_dropped_total",
	} {
		if !strings.Contains(exprs.String(), metric) {
			t.Errorf("dashboard has no query over %s", metric)
		}
	}
	// GPT-Live beside Realtime: the dialect label splits sessions.
	if !strings.Contains(exprs.String(), "by (dialect)") {
		t.Error("dashboard has no query by dialect")
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard has no uid or title")
	}
}

// TestChecksumFollowsConfig: a config change changes the pod annotation (so
// the pods roll), the same config does not; in both chart and example app.
func TestChecksumFollowsConfig(t *testing.T) {
	for _, tc := range []struct {
		chart, a, b string
	}{
		{tetherChartDir, "config: {lifecycle: {idle_timeout: 120s}}", "config: {lifecycle: {idle_timeout: 60s}}"},
		{exampleChartDir, "tether: {config: {log: {level: info}}}", "tether: {config: {log: {level: debug}}}"},
	} {
		sum := func(values string) string {
			r, err := renderChart(tc.chart, values, "")
			if err != nil {
				t.Fatal(err)
			}
			return one[appsv1.Deployment](t, r).Spec.Template.Annotations["checksum/config"]
		}
		a1, a2, b := sum(tc.a), sum(tc.a), sum(tc.b)
		if a1 == "" || a1 != a2 {
			t.Errorf("%s: checksum %q then %q for the same config", tc.chart, a1, a2)
		}
		if a1 == b {
			t.Errorf("%s: checksum %q unchanged after a config change", tc.chart, a1)
		}
	}
}

// TestConfigVerbatim: a config that sets every key the chart would fill in
// is rendered as written.
func TestConfigVerbatim(t *testing.T) {
	values := `
mode: sidecar
config:
  server:
    listen: 0.0.0.0:8080
    paths: ["/v1/realtime", "/realtime"]
    max_sessions: 500
  admin:
    listen: 0.0.0.0:9090
    pprof: false
  auth:
    mode: none
  lifecycle:
    heartbeat:
      client: {interval: 20s, timeout: 5s}
    drain_timeout: 45s
    fatal_upstream_errors: [session_expired]
  telemetry:
    service_name: voice-tether
    traces: {exporter: stdout, sample_ratio: 0.25}
`
	r, err := renderChart(tetherChartDir, values, "")
	if err != nil {
		t.Fatal(err)
	}
	_, tetherYAML := tetherConfigMap(t, r)
	var in struct {
		Config map[string]any `json:"config"`
	}
	if err := yaml.Unmarshal([]byte(values), &in); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal([]byte(tetherYAML), &got); err != nil {
		t.Fatal(err)
	}
	// The chart's own defaults (values.yaml) merge under the user's keys.
	want := normalize(t, in.Config)
	want["lifecycle"].(map[string]any)["idle_timeout"] = "120s"
	want["lifecycle"].(map[string]any)["max_duration"] = "60m"
	want["lifecycle"].(map[string]any)["live"] = map[string]any{"close_timeout": "5s", "quiet": "1s"}
	want["server"].(map[string]any)["live_paths"] = []any{"/v1/live/sessions"}
	want["log"] = map[string]any{"level": "info", "format": "json"}
	if !reflect.DeepEqual(normalize(t, got), want) {
		t.Errorf("rendered tether.yaml:\n%s\nwant the values' config %v", tetherYAML, want)
	}
}

// TestReadmeRedisExample: the chart README's many-replicas example is the
// values of the render case redis, which the checks above hold to.
func TestReadmeRedisExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(tetherChartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "### Limits across replicas\n")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no yaml block under ### Limits across replicas")
	}
	for _, tc := range renderCases {
		if tc.name == "redis" {
			if strings.TrimSpace(block) != strings.TrimSpace(tc.values) {
				t.Errorf("README.md example:\n%s\ndiffers from the values of render case redis:\n%s", block, tc.values)
			}
			return
		}
	}
	t.Fatal("no render case redis")
}
