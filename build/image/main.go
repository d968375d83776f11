// Command image builds tether's OCI image without a Docker engine or a base
// image: for each platform it cross-compiles ./cmd/tether statically and puts
// the binary, CA certificates, /etc/passwd and /etc/group (user 65532) and a
// default /etc/tether/tether.yaml on an empty base. It writes an OCI image
// layout holding one index of all platforms, and a tarball of one platform's
// image that `docker load` and `podman load` accept.
//
// Two builds of the same commit with the same Go toolchain and CA bundle give
// the same digests: every time is $SOURCE_DATE_EPOCH or the commit's time.
//
// From the repository root: make image (or cd build/image && go run . -h).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultRepo is the image's name, the Helm chart's image.repository.
const DefaultRepo = "tetherproxy/tether"

func main() {
	var (
		o           Options
		root        = flag.String("root", "", "repository root (default: the folder of the tether go.mod above the current one)")
		layoutDir   = flag.String("layout", "", "OCI image layout to write (default <root>/bin/image)")
		tarPath     = flag.String("tarball", "", "docker-archive tarball to write (default <root>/bin/tether-image.tar)")
		tarPlatform = flag.String("tarball-platform", "linux/"+hostArch(), "platform of the image in the tarball")
		repo        = flag.String("repo", DefaultRepo, "image name; the tag is the version")
		platforms   = flag.String("platforms", "linux/amd64,linux/arm64", "platforms of the index")
	)
	flag.StringVar(&o.Version, "version", "0.1.0", "version: main.version, the version label and the tag")
	flag.StringVar(&o.Revision, "revision", "", "revision label (default: git rev-parse HEAD, -dirty when tracked files changed)")
	flag.StringVar(&o.CACerts, "ca-certs", DefaultCACerts, "CA bundle to put in the image")
	flag.StringVar(&o.Go, "go", "go", "go command")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, *root, *layoutDir, *tarPath, *tarPlatform, *repo, *platforms); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o Options, root, layoutDir, tarPath, tarPlatform, repo, platforms string) error {
	var err error
	if root == "" {
		if root, err = FindRoot("."); err != nil {
			return err
		}
	}
	o.Root = root
	if layoutDir == "" {
		layoutDir = filepath.Join(root, "bin", "image")
	}
	if tarPath == "" {
		tarPath = filepath.Join(root, "bin", "tether-image.tar")
	}
	if o.Platforms, err = parsePlatforms(platforms); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "tether-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	o.WorkDir = work
	o.Log = os.Stderr

	r, err := Build(ctx, o)
	if err != nil {
		return err
	}
	if err := WriteLayout(r, layoutDir, repo); err != nil {
		return err
	}
	if err := WriteTarball(r, tarPath, repo, tarPlatform); err != nil {
		return err
	}
	fmt.Printf("wrote %s (OCI image layout) and %s (%s, docker-archive)\n", layoutDir, tarPath, tarPlatform)
	return Summary(os.Stdout, r)
}

func hostArch() string {
	if runtime.GOARCH == "arm64" {
		return "arm64"
	}
	return "amd64"
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var ps []v1.Platform
	for _, f := range strings.Split(s, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		ps = append(ps, *p)
	}
	return ps, nil
}

// Tag is the image's reference in the tarball and the layout.
func Tag(repo, version string) (name.Tag, error) {
	return name.NewTag(repo + ":" + version)
}

// WriteLayout replaces dir with an OCI image layout whose index.json points
// at the image index, named by the version.
func WriteLayout(r *Result, dir, repo string) error {
	tag, err := Tag(repo, r.Version)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendIndex(r.Index, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": r.Version,
		// containerd's (and so Docker's) name for the image when this
		// layout is loaded as a tar.
		"io.containerd.image.name": containerdName(tag),
	}))
}

// containerdName is the fully qualified name containerd keeps for a tag:
// docker.io/tetherproxy/tether:0.1.0.
func containerdName(t name.Tag) string {
	reg := t.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + t.RepositoryStr() + ":" + t.TagStr()
}

// WriteTarball writes one platform's image as a docker-archive tarball
// (manifest.json, config, layers), tagged docker.io/repo:version.
func WriteTarball(r *Result, path, repo, platform string) error {
	img, ok := r.Images[platform]
	if !ok {
		return fmt.Errorf("tarball platform %s was not built", platform)
	}
	short, err := Tag(repo, r.Version)
	if err != nil {
		return err
	}
	// Fully qualified, so that podman too names it as the chart pulls it
	// (docker.io/tetherproxy/tether, not localhost/tetherproxy/tether);
	// docker load shows it as tetherproxy/tether:VERSION.
	tag, err := name.NewTag(containerdName(short))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// Summary prints the digests and sizes.
func Summary(w io.Writer, r *Result) error {
	d, err := r.Index.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "index %s  version %s  revision %s  created %s\n", d, r.Version, r.Revision, r.Created.Format("2006-01-02T15:04:05Z"))
	for _, p := range r.Platforms {
		key := p.OS + "/" + p.Architecture
		img := r.Images[key]
		md, err := img.Digest()
		if err != nil {
			return err
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		var sizes []string
		var total int64
		for _, l := range layers {
			n, err := l.Size()
			if err != nil {
				return err
			}
			total += n
			sizes = append(sizes, fmt.Sprintf("%d", n))
		}
		fi, err := os.Stat(r.Binaries[key])
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  %-12s %s  layers (gzip) %s = %d bytes  binary %d bytes\n",
			key, md, strings.Join(sizes, " + "), total, fi.Size())
	}
	return nil
}
