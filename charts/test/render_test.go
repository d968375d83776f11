// Package charttest renders the tether Helm chart (and the example app chart
// that uses it as a sidecar) with Helm's own Go packages, decodes every
// rendered object strictly into Kubernetes API types, checks what users
// depend on, and compares the output with golden files.
//
// Run: cd charts/test && go test ./...   (add -update to rewrite testdata/)
package charttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

const (
	tetherChartDir  = "../tether"
	exampleChartDir = "../tether/examples/voice-app"
	releaseName     = "t"
	namespace       = "voice"
	defaultKube     = "v1.33.0"
)

// kinds maps apiVersion/kind to the Go type a rendered object must decode
// into without unknown or duplicate fields. A kind missing here fails the
// test: add its type rather than skip it.
var kinds = map[string]func() any{
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":                func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                                  func() any { return &corev1.Pod{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

// rendered is one `helm template` of a chart.
type rendered struct {
	manifest string // as `helm template` prints it: manifests, then hooks
	notes    string
	docs     []renderedDoc
	// values are the coalesced values of the tether chart (for the example
	// chart: of its tether subchart).
	values map[string]any
}

type renderedDoc struct {
	source string // template path
	hook   bool
	obj    any // pointer to the typed object
}

// loadChart loads a chart directory; for the example chart it attaches the
// tether chart as the file:// dependency `helm dependency build` would.
func loadChart(dir string) (*chart.Chart, error) {
	c, err := loader.Load(dir)
	if err != nil {
		return nil, err
	}
	if c.Name() == "voice-app" {
		dep, err := loader.Load(tetherChartDir)
		if err != nil {
			return nil, err
		}
		c.SetDependencies(dep)
	}
	return c, nil
}

// renderChart renders dir with valuesYAML like `helm template` (schema
// validation included) against Kubernetes kube (default defaultKube).
func renderChart(dir, valuesYAML, kube string) (*rendered, error) {
	c, err := loadChart(dir)
	if err != nil {
		return nil, err
	}
	vals, err := chartutil.ReadValues([]byte(valuesYAML))
	if err != nil {
		return nil, fmt.Errorf("test values: %w", err)
	}
	if kube == "" {
		kube = defaultKube
	}
	kv, err := chartutil.ParseKubeVersion(kube)
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.ClientOnly = true
	inst.DryRun = true
	inst.DryRunOption = "client"
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.KubeVersion = kv
	rel, err := inst.RunWithContext(context.Background(), c, vals)
	if err != nil {
		return nil, err
	}

	var out strings.Builder
	out.WriteString(rel.Manifest)
	for _, h := range rel.Hooks {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	r := &rendered{manifest: out.String(), notes: rel.Info.Notes}

	for _, d := range splitDocs(rel.Manifest) {
		obj, err := decodeStrict(d)
		if err != nil {
			return nil, err
		}
		r.docs = append(r.docs, renderedDoc{source: sourceOf(d), obj: obj})
	}
	for _, h := range rel.Hooks {
		obj, err := decodeStrict(h.Manifest)
		if err != nil {
			return nil, fmt.Errorf("hook %s: %w", h.Path, err)
		}
		r.docs = append(r.docs, renderedDoc{source: h.Path, hook: true, obj: obj})
	}

	all, err := chartutil.CoalesceValues(c, vals)
	if err != nil {
		return nil, err
	}
	r.values = all
	if c.Name() != "tether" {
		sub, ok := all["tether"].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s has no tether values", c.Name())
		}
		r.values = sub
	}
	return r, nil
}

// splitDocs returns the documents of a manifest stream in order.
func splitDocs(manifest string) []string {
	m := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	num := func(k string) int {
		n, _ := strconv.Atoi(strings.TrimPrefix(k, "manifest-"))
		return n
	}
	slices.SortFunc(keys, func(a, b string) int { return num(a) - num(b) })
	docs := make([]string, 0, len(keys))
	for _, k := range keys {
		docs = append(docs, m[k])
	}
	return docs
}

var sourceRE = regexp.MustCompile(`(?m)^# Source: (.+)$`)

func sourceOf(doc string) string {
	if m := sourceRE.FindStringSubmatch(doc); m != nil {
		return m[1]
	}
	return "(unknown source)"
}

// decodeStrict decodes one document into its Kubernetes type, rejecting
// unknown and duplicate fields.
func decodeStrict(doc string) (any, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
		return nil, fmt.Errorf("%s: not YAML: %w", sourceOf(doc), err)
	}
	newObj, ok := kinds[head.APIVersion+"/"+head.Kind]
	if !ok {
		return nil, fmt.Errorf("%s: no strict type registered for %s %s", sourceOf(doc), head.APIVersion, head.Kind)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		return nil, fmt.Errorf("%s: %s %s does not decode strictly: %w", sourceOf(doc), head.APIVersion, head.Kind, err)
	}
	return obj, nil
}

// objectsOf returns the rendered objects of type T (hooks included).
func objectsOf[T any](r *rendered) []*T {
	var out []*T
	for _, d := range r.docs {
		if o, ok := d.obj.(*T); ok {
			out = append(out, o)
		}
	}
	return out
}

// one returns the only rendered object of type T.
func one[T any](t *testing.T, r *rendered) *T {
	t.Helper()
	objs := objectsOf[T](r)
	if len(objs) != 1 {
		var zero T
		t.Fatalf("rendered %d objects of type %T, want 1", len(objs), zero)
	}
	return objs[0]
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) == got {
		return
	}
	wl, gl := strings.Split(string(want), "\n"), strings.Split(got, "\n")
	for i := range max(len(wl), len(gl)) {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			t.Errorf("%s differs from the rendered chart at line %d:\nwant: %q\ngot:  %q\n(run go test -update after checking the change)", path, i+1, w, g)
			return
		}
	}
}
