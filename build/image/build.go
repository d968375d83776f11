package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the image is, shared by the builder, its test and the Dockerfile check.
const (
	// modulePath is the sidecar's module; its go.mod marks the repository root.
	modulePath = "github.com/tetherproxy/tether"
	// sourceURL is the org.opencontainers.image.source label.
	sourceURL = "https://github.com/tetherproxy/tether"

	binaryPath  = "usr/local/bin/tether"
	caCertsPath = "etc/ssl/certs/ca-certificates.crt"
	configPath  = "etc/tether/tether.yaml"

	// user is numeric, so the kubelet can verify runAsNonRoot without a runAsUser.
	user = "65532:65532"

	// rootfsDir holds, relative to the repository root, the image's files that
	// are not built: /etc/passwd, /etc/group and the default config. The
	// Dockerfile copies the same folder.
	rootfsDir = "build/image/rootfs"

	// DefaultCACerts is where Debian's ca-certificates package puts the bundle.
	DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"
)

var (
	entrypoint = []string{"/" + binaryPath}
	cmd        = []string{"serve", "--config", "/" + configPath}
	// 8080: client WebSocket listener; 9090: admin (/healthz /readyz /metrics /sessions).
	exposedPorts = []string{"8080/tcp", "9090/tcp"}
	env          = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"SSL_CERT_FILE=/" + caCertsPath,
	}
	// rootfsFiles are the files taken from rootfsDir, with their modes.
	rootfsFiles = []struct {
		name string
		mode int64
	}{
		{"etc/group", 0o644},
		{"etc/passwd", 0o644},
		{configPath, 0o644},
	}
	// DefaultPlatforms are the platforms of the index, in its order.
	DefaultPlatforms = []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64"},
	}
)

// Options say what to build.
type Options struct {
	// Root is the repository root (the folder of the sidecar's go.mod).
	Root string
	// Version goes into the binary (main.version) and the version label.
	Version string
	// Revision is the revision label; empty means from git.
	Revision string
	// Created is every file's time and the image's creation time; zero
	// means $SOURCE_DATE_EPOCH, else the commit time of HEAD.
	Created time.Time
	// CACerts is the CA bundle copied into the image.
	CACerts string
	// Platforms to build; empty means DefaultPlatforms.
	Platforms []v1.Platform
	// Go is the go command; empty means "go".
	Go string
	// WorkDir receives the compiled binaries; empty means a temporary folder.
	WorkDir string
	// Log receives progress lines; nil means none.
	Log io.Writer
}

// Result is what Build made.
type Result struct {
	Index v1.ImageIndex
	// Images by platform ("linux/amd64"), in Platforms order.
	Images    map[string]v1.Image
	Platforms []v1.Platform
	// Binaries by platform: the compiled files in WorkDir.
	Binaries map[string]string
	Version  string
	Revision string
	Created  time.Time
}

// Annotations are the OCI annotations of the index and its manifests, the
// same as the config's labels.
func (r *Result) Annotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":   sourceURL,
		"org.opencontainers.image.version":  r.Version,
		"org.opencontainers.image.revision": r.Revision,
		"org.opencontainers.image.created":  r.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.title":    "tether",
		"org.opencontainers.image.description": "tether, a WebSocket sidecar proxy for realtime voice APIs: " +
			"a static binary on an empty base, running as 65532",
	}
}

// FindRoot walks up from dir to the folder whose go.mod is the sidecar's.
func FindRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modLine(data) == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the current folder", modulePath)
		}
		dir = parent
	}
}

func modLine(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return f[1]
		}
	}
	return ""
}

// Build compiles the sidecar for each platform and assembles the images and
// their index. Nothing is written but the binaries in WorkDir.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Root == "" {
		return nil, errors.New("no repository root")
	}
	if o.Version == "" {
		return nil, errors.New("no version")
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if o.CACerts == "" {
		o.CACerts = DefaultCACerts
	}
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.WorkDir == "" {
		dir, err := os.MkdirTemp("", "tether-image-")
		if err != nil {
			return nil, err
		}
		o.WorkDir = dir
	}
	r := &Result{
		Images:    map[string]v1.Image{},
		Binaries:  map[string]string{},
		Platforms: o.Platforms,
		Version:   o.Version,
		Revision:  o.Revision,
		Created:   o.Created,
	}
	if r.Revision == "" {
		rev, err := gitRevision(ctx, o.Root)
		if err != nil {
			return nil, fmt.Errorf("revision label: %w (set -revision)", err)
		}
		r.Revision = rev
	}
	if r.Created.IsZero() {
		t, err := sourceDate(ctx, o.Root)
		if err != nil {
			return nil, err
		}
		r.Created = t
	}
	r.Created = r.Created.UTC().Truncate(time.Second)

	base, err := baseLayer(o.Root, o.CACerts, r.Created)
	if err != nil {
		return nil, err
	}

	var adds []mutate.IndexAddendum
	for _, p := range o.Platforms {
		key := p.OS + "/" + p.Architecture
		bin := filepath.Join(o.WorkDir, "tether-"+p.OS+"-"+p.Architecture)
		fmt.Fprintf(o.Log, "build %s: go build ./cmd/tether\n", key)
		if err := compile(ctx, o.Go, o.Root, p, r.Version, bin); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		app, err := binaryLayer(bin, r.Created)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		img, err := r.image(p, base, app)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		r.Images[key] = img
		r.Binaries[key] = bin
		plat := p
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.AppendManifests(idx, adds...)
	r.Index = mutate.Annotations(idx, r.Annotations()).(v1.ImageIndex)
	return r, nil
}

// image is one platform's image: the base layer, the binary's layer, the config.
func (r *Result) image(p v1.Platform, base, app v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: r.Created}
	img, err := mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created:   created,
			CreatedBy: "tether build/image: /etc/passwd, /etc/group, CA certificates, /" + configPath,
		}},
		mutate.Addendum{Layer: app, MediaType: types.OCILayer, History: v1.History{
			Created:   created,
			CreatedBy: "tether build/image: /" + binaryPath + " (CGO_ENABLED=0 go build -trimpath ./cmd/tether)",
		}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = p.OS
	cf.Architecture = p.Architecture
	cf.Variant = p.Variant
	cf.Created = created
	cf.Author = ""
	cf.Config = v1.Config{
		User:         user,
		Entrypoint:   entrypoint,
		Cmd:          cmd,
		Env:          env,
		ExposedPorts: map[string]struct{}{},
		Labels:       r.labels(),
	}
	for _, port := range exposedPorts {
		cf.Config.ExposedPorts[port] = struct{}{}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, r.Annotations()).(v1.Image), nil
}

func (r *Result) labels() map[string]string {
	l := r.Annotations()
	delete(l, "org.opencontainers.image.created") // the config has its own
	return l
}

// goBuildFlags are the go build flags of the binary; the Dockerfile uses the
// same (its test checks), with ${VERSION} for the version.
func goBuildFlags(version string) []string {
	return []string{"-trimpath", "-buildvcs=false", "-ldflags", "-s -w -X main.version=" + version}
}

// compile cross-compiles ./cmd/tether statically, as the Dockerfile does.
func compile(ctx context.Context, goCmd, root string, p v1.Platform, version, out string) error {
	args := append([]string{"build"}, goBuildFlags(version)...)
	c := exec.CommandContext(ctx, goCmd, append(args, "-o", out, "./cmd/tether")...)
	c.Dir = root
	// Pin what would otherwise come from the environment and change the binary.
	c.Env = append(os.Environ(),
		"CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture,
		"GOAMD64=v1", "GOARM64=v8.0", "GOEXPERIMENT=", "GOTOOLCHAIN=local")
	c.Stdout = os.Stderr
	c.Stderr = os.Stderr
	return c.Run()
}

// gitRevision is HEAD's commit, with "-dirty" when tracked files differ from it.
func gitRevision(ctx context.Context, root string) (string, error) {
	rev, err := git(ctx, root, "rev-parse", "HEAD")
	if err != nil {
		return "", err
	}
	status, err := git(ctx, root, "status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return "", err
	}
	if status != "" {
		rev += "-dirty"
	}
	return rev, nil
}

// sourceDate is $SOURCE_DATE_EPOCH, else the commit time of HEAD.
func sourceDate(ctx context.Context, root string) (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		return time.Unix(n, 0), nil
	}
	s, err := git(ctx, root, "log", "-1", "--format=%ct", "HEAD")
	if err != nil {
		return time.Time{}, fmt.Errorf("commit time: %w (set SOURCE_DATE_EPOCH)", err)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("commit time %q: %w", s, err)
	}
	return time.Unix(n, 0), nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	c := exec.CommandContext(ctx, "git", args...)
	c.Dir = dir
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// entry is one file of a layer.
type entry struct {
	name string // without a leading slash
	mode int64
	data []byte
}

// baseLayer holds everything but the binary; it is the same for every platform.
func baseLayer(root, caCerts string, t time.Time) (v1.Layer, error) {
	var files []entry
	ca, err := os.ReadFile(caCerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates (install Debian's ca-certificates): %w", err)
	}
	if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caCerts)
	}
	files = append(files, entry{caCertsPath, 0o644, ca})
	for _, f := range rootfsFiles {
		data, err := os.ReadFile(filepath.Join(root, rootfsDir, f.name))
		if err != nil {
			return nil, err
		}
		files = append(files, entry{f.name, f.mode, data})
	}
	return layer(files, t)
}

func binaryLayer(bin string, t time.Time) (v1.Layer, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	return layer([]entry{{binaryPath, 0o755, data}}, t)
}

// layer writes a reproducible tar: sorted names, every parent folder, owner
// 0:0 without names, one time, and gzip without a name or a time.
func layer(files []entry, t time.Time) (v1.Layer, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.name); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	type item struct {
		hdr  *tar.Header
		data []byte
	}
	var items []item
	for d := range dirs {
		items = append(items, item{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}})
	}
	for _, f := range files {
		items = append(items, item{
			hdr:  &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data))},
			data: f.data,
		})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].hdr.Name < items[j].hdr.Name })

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, it := range items {
		it.hdr.ModTime = t
		it.hdr.Uid, it.hdr.Gid = 0, 0
		it.hdr.Format = tar.FormatUSTAR
		if err := tw.WriteHeader(it.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(it.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	blob := gz.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
