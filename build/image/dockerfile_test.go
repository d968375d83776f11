package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	op   string // upper case
	args string
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		op, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(op), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// words splits on blanks outside double quotes and drops the quotes.
func words(s string) []string {
	var out []string
	var w strings.Builder
	quoted, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, w.String())
	}
	return out
}

// TestDockerfileMatches: the Dockerfile builds the image the Go build does:
// the same go build flags, an empty base, the same files, user, ports,
// entrypoint, command, environment and labels.
func TestDockerfileMatches(t *testing.T) {
	root, err := FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	ins := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	last := -1
	for i, in := range ins {
		if in.op == "FROM" {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("no FROM")
	}
	build, final := ins[:last], ins[last:]

	// The build stage: the same static go build.
	wantBuild := strings.Join(goBuildFlags("${VERSION}")[:3], " ") + ` "` + goBuildFlags("${VERSION}")[3] + `"`
	var sawBuild, sawCgo bool
	for _, in := range build {
		if in.op == "RUN" && strings.Contains(in.args, "go build") {
			sawBuild = true
			if !strings.Contains(in.args, "go build "+wantBuild+" ") || !strings.HasSuffix(in.args, " ./cmd/tether") {
				t.Errorf("Dockerfile builds with\n  %s\nwant go build %s ... ./cmd/tether", in.args, wantBuild)
			}
		}
		if in.op == "ENV" && strings.Contains(" "+in.args+" ", " CGO_ENABLED=0 ") {
			sawCgo = true
		}
	}
	if !sawBuild || !sawCgo {
		t.Errorf("build stage: go build found %v, CGO_ENABLED=0 found %v", sawBuild, sawCgo)
	}

	// The final stage.
	if final[0].args != "scratch" {
		t.Errorf("final stage FROM %s, want scratch", final[0].args)
	}
	var copies, envs []string
	labels := map[string]string{}
	for _, in := range final[1:] {
		switch in.op {
		case "COPY":
			copies = append(copies, in.args)
		case "ENV":
			envs = append(envs, words(in.args)...)
		case "LABEL":
			for _, w := range words(in.args) {
				k, v, _ := strings.Cut(w, "=")
				labels[k] = v
			}
		case "USER":
			if in.args != user {
				t.Errorf("USER %s, want %s", in.args, user)
			}
		case "EXPOSE":
			var got []string
			for _, p := range strings.Fields(in.args) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				got = append(got, p)
			}
			if !reflect.DeepEqual(got, exposedPorts) {
				t.Errorf("EXPOSE %v, want %v", got, exposedPorts)
			}
		case "ENTRYPOINT", "CMD":
			var got []string
			if err := json.Unmarshal([]byte(in.args), &got); err != nil {
				t.Errorf("%s %s: not the exec form: %v", in.op, in.args, err)
			}
			want := map[string][]string{"ENTRYPOINT": entrypoint, "CMD": cmd}[in.op]
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s %q, want %q", in.op, got, want)
			}
		case "ARG":
		default:
			t.Errorf("final stage has %s %s, which the Go build does not", in.op, in.args)
		}
	}
	wantCopies := []string{
		"--from=build " + DefaultCACerts + " /" + caCertsPath,
		rootfsDir + "/ /",
		"--from=build /out/tether /" + binaryPath,
	}
	sort.Strings(copies)
	sort.Strings(wantCopies)
	if !reflect.DeepEqual(copies, wantCopies) {
		t.Errorf("final stage copies\n  %q\nwant\n  %q", copies, wantCopies)
	}
	if !reflect.DeepEqual(envs, env) {
		t.Errorf("ENV %q, want %q", envs, env)
	}
	want := (&Result{Version: "${VERSION}", Revision: "${REVISION}"}).labels()
	if !reflect.DeepEqual(labels, want) {
		t.Errorf("LABEL\n  %v\nwant\n  %v", labels, want)
	}
}
