package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testVersion shows that -X main.version reached the binary.
const testVersion = "0.0.0-imagetest"

// expectedEntries is every entry the image's layers may hold, with its mode.
var expectedEntries = map[string]int64{
	"etc/":           0o755,
	"etc/group":      0o644,
	"etc/passwd":     0o644,
	"etc/ssl/":       0o755,
	"etc/ssl/certs/": 0o755,
	caCertsPath:      0o644,
	"etc/tether/":    0o755,
	configPath:       0o644,
	"usr/":           0o755,
	"usr/local/":     0o755,
	"usr/local/bin/": 0o755,
	binaryPath:       0o755,
}

func build(t *testing.T, root string) (*Result, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	r, err := Build(ctx, Options{Root: root, Version: testVersion, WorkDir: dir, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	layoutDir, tarPath := filepath.Join(dir, "image"), filepath.Join(dir, "tether-image.tar")
	if err := WriteLayout(r, layoutDir, DefaultRepo); err != nil {
		t.Fatal(err)
	}
	if err := WriteTarball(r, tarPath, DefaultRepo, "linux/amd64"); err != nil {
		t.Fatal(err)
	}
	return r, layoutDir, tarPath
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestImage builds the image twice; reads the first build's OCI layout back,
// checks the index, each image's config and the files of its layers, runs the
// unpacked host binary, checks the docker-archive tarball; and checks that the
// second build has the same digests and bytes.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles tether twice; not in -short")
	}
	if _, err := os.Stat(DefaultCACerts); err != nil {
		t.Fatalf("the image takes its CA certificates from %s (Debian's ca-certificates package): %v", DefaultCACerts, err)
	}
	root, err := FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	r, layoutDir, tarPath := build(t, root)
	var sum bytes.Buffer
	if err := Summary(&sum, r); err != nil {
		t.Fatal(err)
	}
	t.Logf("first build:\n%s", sum.String())

	// Created is the commit time (or SOURCE_DATE_EPOCH), to the second.
	want, err := sourceDate(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Created.Equal(want) {
		t.Errorf("created %v, want the source date %v", r.Created, want)
	}

	idx, im := checkLayout(t, layoutDir, r)
	var baseLayers []v1.Hash
	for _, m := range im.Manifests {
		t.Run(strings.ReplaceAll(m.Platform.String(), "/", "_"), func(t *testing.T) {
			img, err := idx.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			baseLayers = append(baseLayers, checkManifest(t, img, r))
			checkConfig(t, root, img, m.Platform, r)
			checkUnpacked(t, root, img, m.Platform, r.Created)
		})
	}
	if len(baseLayers) == 2 && baseLayers[0] != baseLayers[1] {
		t.Errorf("base layers differ across platforms: %v", baseLayers)
	}

	checkTarball(t, tarPath, r)
	checkRebuild(t, root, r, layoutDir, tarPath)
}

// checkLayout reads the OCI layout back: index.json names one image index,
// which has both platforms. It returns the image index and its manifest.
func checkLayout(t *testing.T, layoutDir string, r *Result) (v1.ImageIndex, *v1.IndexManifest) {
	t.Helper()
	top, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	topm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(topm.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1", len(topm.Manifests))
	}
	ref := topm.Manifests[0]
	if ref.MediaType != types.OCIImageIndex {
		t.Errorf("index.json entry is a %s, want an OCI image index", ref.MediaType)
	}
	if got := ref.Annotations["org.opencontainers.image.ref.name"]; got != testVersion {
		t.Errorf("ref.name %q, want %q", got, testVersion)
	}
	if got := ref.Annotations["io.containerd.image.name"]; got != "docker.io/"+DefaultRepo+":"+testVersion {
		t.Errorf("io.containerd.image.name %q", got)
	}
	idx, err := top.ImageIndex(ref.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s", im.MediaType)
	}
	checkAnnotations(t, "index", im.Annotations, r)
	var plats []string
	for _, m := range im.Manifests {
		if m.Platform == nil {
			t.Fatalf("manifest %s has no platform", m.Digest)
		}
		plats = append(plats, m.Platform.String())
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !reflect.DeepEqual(plats, want) {
		t.Fatalf("index platforms %v, want %v", plats, want)
	}
	return idx, im
}

// checkManifest checks an image's manifest: OCI media types, the
// annotations, two OCI layers (base, binary). It returns the base layer's
// digest.
func checkManifest(t *testing.T, img v1.Image, r *Result) v1.Hash {
	t.Helper()
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if mf.MediaType != types.OCIManifestSchema1 || mf.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("media types %s / %s, want OCI", mf.MediaType, mf.Config.MediaType)
	}
	checkAnnotations(t, "manifest", mf.Annotations, r)
	if len(mf.Layers) != 2 {
		t.Fatalf("%d layers, want 2 (base, binary)", len(mf.Layers))
	}
	for _, l := range mf.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer %s is a %s", l.Digest, l.MediaType)
		}
	}
	return mf.Layers[0].Digest
}

// checkUnpacked unpacks the image's layers, checks the files, and runs the
// binary where p is the host's platform.
func checkUnpacked(t *testing.T, root string, img v1.Image, p *v1.Platform, created time.Time) {
	t.Helper()
	dir := t.TempDir()
	unpack(t, img, dir, created)
	checkFiles(t, root, dir, p)
	if p.Architecture == runtime.GOARCH && runtime.GOOS == "linux" {
		runBinary(t, dir)
	} else {
		t.Logf("%s: not the host's platform; the binary is checked but not run", p)
	}
}

// checkRebuild builds the same commit a second time and checks that it has
// the same digests and the same bytes as the first build (r, with its
// layout and tarball).
func checkRebuild(t *testing.T, root string, r *Result, layoutDir, tarPath string) {
	t.Helper()
	r2, layoutDir2, tarPath2 := build(t, root)
	d1, _ := r.Index.Digest()
	d2, err := r2.Index.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("second build's index %s, first %s", d2, d1)
	} else {
		t.Logf("second build: the same index digest %s", d2)
	}
	for _, p := range r.Platforms {
		key := p.String()
		a, _ := r.Images[key].Digest()
		b, _ := r2.Images[key].Digest()
		if a != b {
			t.Errorf("%s: manifest %s then %s", key, a, b)
		}
	}
	if a, b := treeSums(t, layoutDir), treeSums(t, layoutDir2); !reflect.DeepEqual(a, b) {
		t.Errorf("the two layouts differ:\n%v\n%v", a, b)
	}
	if a, b := fileSum(t, tarPath), fileSum(t, tarPath2); a != b {
		t.Errorf("the two tarballs differ: %s, %s", a, b)
	}
}

func checkAnnotations(t *testing.T, what string, got map[string]string, r *Result) {
	t.Helper()
	for k, v := range r.Annotations() {
		if got[k] != v {
			t.Errorf("%s annotation %s = %q, want %q", what, k, got[k], v)
		}
	}
}

func checkConfig(t *testing.T, root string, img v1.Image, p *v1.Platform, r *Result) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture {
		t.Errorf("config platform %s/%s, index says %s", cf.OS, cf.Architecture, p)
	}
	if !cf.Created.Time.Equal(r.Created) {
		t.Errorf("config created %v, want %v", cf.Created.Time, r.Created)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if want := []string{"/usr/local/bin/tether"}; !reflect.DeepEqual(c.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", c.Entrypoint, want)
	}
	if want := []string{"serve", "--config", "/etc/tether/tether.yaml"}; !reflect.DeepEqual(c.Cmd, want) {
		t.Errorf("cmd %q, want %q", c.Cmd, want)
	}
	var ports []string
	for p := range c.ExposedPorts {
		ports = append(ports, p)
	}
	sort.Strings(ports)
	if want := []string{"8080/tcp", "9090/tcp"}; !reflect.DeepEqual(ports, want) {
		t.Errorf("exposed ports %v, want %v", ports, want)
	}
	labels := map[string]string{
		"org.opencontainers.image.source":  "https://github.com/tetherproxy/tether",
		"org.opencontainers.image.version": testVersion,
	}
	for k, v := range labels {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	rev := c.Labels["org.opencontainers.image.revision"]
	head, err := git(context.Background(), root, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSuffix(rev, "-dirty") != head || len(head) != 40 {
		t.Errorf("revision label %q, want HEAD %s (with -dirty when tracked files changed)", rev, head)
	}
	if !slices.Contains(c.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") {
		t.Errorf("env %q has no SSL_CERT_FILE", c.Env)
	}
	if len(cf.RootFS.DiffIDs) != 2 || len(cf.History) != 2 {
		t.Errorf("rootfs %d diff ids, %d history entries; want 2 and 2", len(cf.RootFS.DiffIDs), len(cf.History))
	}
}

// unpack applies the image's layers to dir, as a runtime would, and fails on
// any entry that is not a plain folder or file owned by 0:0 at the source date.
func unpack(t *testing.T, img v1.Image, dir string, created time.Time) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			name := h.Name
			clean := path.Clean(name)
			if strings.HasPrefix(name, "/") || clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(path.Base(clean), ".wh.") {
				t.Fatalf("layer %d: entry %q", i, name)
			}
			if want, ok := expectedEntries[name]; !ok {
				t.Errorf("layer %d: unexpected entry %q", i, name)
				continue
			} else if h.Mode != want {
				t.Errorf("layer %d: %s mode %o, want %o", i, name, h.Mode, want)
			}
			if seen[name] && h.Typeflag != tar.TypeDir {
				t.Errorf("layer %d: %s again", i, name)
			}
			seen[name] = true
			if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
				t.Errorf("layer %d: %s owned by %d:%d (%q:%q), want 0:0", i, name, h.Uid, h.Gid, h.Uname, h.Gname)
			}
			if !h.ModTime.Equal(created) {
				t.Errorf("layer %d: %s time %v, want %v", i, name, h.ModTime, created)
			}
			target := filepath.Join(dir, filepath.FromSlash(clean))
			switch h.Typeflag {
			case tar.TypeDir:
				if err := os.MkdirAll(target, 0o755); err != nil {
					t.Fatal(err)
				}
			case tar.TypeReg:
				data, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(target, data, fs.FileMode(h.Mode)); err != nil {
					t.Fatal(err)
				}
			default:
				t.Errorf("layer %d: %s has type %q, want a folder or a file", i, name, h.Typeflag)
			}
		}
		rc.Close()
	}
	for name := range expectedEntries {
		if !seen[name] {
			t.Errorf("no %s in the layers", name)
		}
	}
}

func checkFiles(t *testing.T, root, dir string, p *v1.Platform) {
	t.Helper()
	read := func(name string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	ca, err := os.ReadFile(DefaultCACerts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(caCertsPath), ca) {
		t.Errorf("%s differs from the build machine's %s", caCertsPath, DefaultCACerts)
	}
	if passwd := string(read("etc/passwd")); !strings.Contains(passwd, "\nnonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot 65532:\n%s", passwd)
	}
	if group := string(read("etc/group")); !strings.Contains(group, "\nnonroot:x:65532:") {
		t.Errorf("/etc/group has no nonroot 65532:\n%s", group)
	}
	cfg := string(read(configPath))
	for _, want := range []string{`listen: "0.0.0.0:8080"`, `listen: "0.0.0.0:9090"`, "pprof: false"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("/%s lacks %s:\n%s", configPath, want, cfg)
		}
	}

	// The binary: static, stripped, for the platform.
	f, err := elf.Open(filepath.Join(dir, binaryPath))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Architecture]
	if f.Machine != machine {
		t.Errorf("binary is for %v, want %v", f.Machine, machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: not static", prog.Type)
		}
	}
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: not built with -s")
	}
}

// runBinary runs the unpacked binary as the image would, outside a container.
func runBinary(t *testing.T, dir string) {
	t.Helper()
	bin := filepath.Join(dir, binaryPath)
	run := func(args ...string) string {
		t.Helper()
		c := exec.Command(bin, args...)
		c.Dir = dir
		c.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir} // no TETHER_* from the test's environment
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("tether %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if got, want := run("version"), "tether "+testVersion+"\n"; got != want {
		t.Errorf("tether version printed %q, want %q", got, want)
	}
	cfg := filepath.Join(dir, filepath.FromSlash(configPath))
	out := run("config", "validate", "--config", cfg)
	t.Logf("tether config validate --config %s: %s", cfg, strings.TrimSpace(out))
}

// checkTarball reads the docker-archive back: one image, tagged, the amd64 one.
func checkTarball(t *testing.T, tarPath string, r *Result) {
	t.Helper()
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tarPath) })
	if err != nil {
		t.Fatal(err)
	}
	if want := "docker.io/" + DefaultRepo + ":" + testVersion; len(m) != 1 || !reflect.DeepEqual(m[0].RepoTags, []string{want}) {
		t.Fatalf("tarball manifest.json %+v, want one image tagged %s", m, want)
	}
	img, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := r.Images["linux/amd64"]
	gotCfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	wantCfg, _ := want.ConfigName()
	if gotCfg != wantCfg {
		t.Errorf("tarball config %s, want the amd64 image's %s", gotCfg, wantCfg)
	}
	gl, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	wl, _ := want.Layers()
	if len(gl) != len(wl) {
		t.Fatalf("tarball has %d layers, want %d", len(gl), len(wl))
	}
	for i := range gl {
		a, _ := gl[i].DiffID()
		b, _ := wl[i].DiffID()
		if a != b {
			t.Errorf("tarball layer %d: %s, want %s", i, a, b)
		}
	}
}

func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sums[rel] = fileSum(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// TestRootfs: the rootfs folder, which the Dockerfile copies whole, holds
// exactly the files the Go build takes from it.
func TestRootfs(t *testing.T) {
	root, err := FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	err = filepath.WalkDir(filepath.Join(root, rootfsDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(root, rootfsDir), p)
		got = append(got, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rootfsFiles {
		want = append(want, f.name)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s holds %v, the build takes %v", rootfsDir, got, want)
	}
}

// TestLayerReproducible: the same files give the same layer, whatever order
// they come in.
func TestLayerReproducible(t *testing.T) {
	at := time.Unix(1700000000, 0)
	a, err := layer([]entry{{"etc/a", 0o644, []byte("a")}, {"usr/b", 0o755, []byte("b")}}, at)
	if err != nil {
		t.Fatal(err)
	}
	b, err := layer([]entry{{"usr/b", 0o755, []byte("b")}, {"etc/a", 0o644, []byte("a")}}, at)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("layer digests %s and %s", da, db)
	}
	c, err := layer([]entry{{"etc/a", 0o644, []byte("a")}, {"usr/b", 0o755, []byte("b")}}, at.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if dc, _ := c.Digest(); dc == da {
		t.Error("the file time does not reach the layer")
	}
}
