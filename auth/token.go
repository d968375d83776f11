package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// reloadEvery bounds how often a credentials file is stat'ed for changes.
const reloadEvery = time.Second

// fileWatch re-reads a file when its size or modification time changes.
type fileWatch struct {
	path    string
	mu      sync.Mutex
	checked time.Time
	mod     time.Time
	size    int64
}

// changed reports whether the file must be (re)loaded; it stats at most
// once per reloadEvery. The caller calls loaded(fi) once the new content is
// in use, so a failed load is retried at the next check.
func (w *fileWatch) changed(now time.Time, force bool) (os.FileInfo, bool, error) {
	if !force && now.Sub(w.checked) < reloadEvery {
		return nil, false, nil
	}
	w.checked = now
	fi, err := os.Stat(w.path)
	if err != nil {
		return nil, false, err
	}
	if !force && fi.ModTime().Equal(w.mod) && fi.Size() == w.size {
		return nil, false, nil
	}
	return fi, true, nil
}

// loaded records the file version now in use.
func (w *fileWatch) loaded(fi os.FileInfo) { w.mod, w.size = fi.ModTime(), fi.Size() }

// reload re-reads the file when it changed and passes its content to use,
// which takes it in or says why not. Caller holds w.mu. With force (the
// first load) every failure is returned, a stat or read failure as
// "<setting>: <err>"; otherwise a failure keeps what is in use, and the file
// is tried again at the next check.
func (w *fileWatch) reload(setting string, force bool, use func(data []byte) error) error {
	fi, ch, err := w.changed(time.Now(), force)
	if err == nil && !ch {
		return nil
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(w.path)
	}
	if err != nil {
		err = fmt.Errorf("%s: %w", setting, err)
	} else if err = use(data); err == nil {
		w.loaded(fi)
		return nil
	}
	if force {
		return err
	}
	return nil
}

// tokenEntry is one accepted token: its SHA-256 and a label for logs.
type tokenEntry struct {
	sum   [sha256.Size]byte
	label string
}

// Tokens accepts the tokens listed in a file, one per line: a plain token or
// `sha256:<hex>` of one. Blank lines and lines starting with # are ignored;
// an optional label follows the token after whitespace ("tok123 app-a").
// The file is re-read when it changes.
type Tokens struct {
	w       fileWatch
	entries []tokenEntry // guarded by w.mu
}

// NewTokens loads path; an unreadable or empty file is an error.
func NewTokens(path string) (*Tokens, error) {
	t := &Tokens{w: fileWatch{path: path}}
	t.w.mu.Lock()
	defer t.w.mu.Unlock()
	if err := t.reload(true); err != nil {
		return nil, err
	}
	return t, nil
}

// reload re-reads the file when it changed. Caller holds w.mu. A file that
// cannot be read or parsed (a rewrite caught half-way) keeps the previous
// list and is tried again; a file that parses to no token revokes them all.
func (t *Tokens) reload(force bool) error {
	return t.w.reload("tokens_file", force, func(data []byte) error {
		entries, err := parseTokens(data)
		switch {
		case errors.Is(err, errNoTokens) && !force:
			entries = nil // every token revoked
		case err != nil:
			return fmt.Errorf("tokens_file %s: %w", t.w.path, err)
		}
		t.entries = entries
		return nil
	})
}

// errNoTokens: the file lists no token.
var errNoTokens = errors.New("no tokens")

// parseTokens parses a tokens file.
func parseTokens(data []byte) ([]tokenEntry, error) {
	var out []tokenEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		fields := strings.Fields(s)
		tok := fields[0]
		label := fmt.Sprintf("token-%d", line)
		if len(fields) > 1 {
			label = fields[1]
		}
		var e tokenEntry
		if hexSum, ok := strings.CutPrefix(tok, "sha256:"); ok {
			b, err := hex.DecodeString(hexSum)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("line %d: sha256: needs 64 hex digits", line)
			}
			copy(e.sum[:], b)
		} else {
			e.sum = sha256.Sum256([]byte(tok))
		}
		e.label = label
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errNoTokens
	}
	return out, nil
}

// Authenticate implements Authenticator. Every entry is compared (constant
// time per entry), so timing does not reveal which one matched.
func (t *Tokens) Authenticate(r *http.Request) (string, error) {
	cred, ok := Credential(r)
	if !ok {
		return "", ErrMissing
	}
	sum := sha256.Sum256([]byte(cred))
	t.w.mu.Lock()
	_ = t.reload(false)
	entries := t.entries
	t.w.mu.Unlock()
	match := -1
	for i := range entries {
		if subtle.ConstantTimeCompare(sum[:], entries[i].sum[:]) == 1 && match < 0 {
			match = i
		}
	}
	if match < 0 {
		return "", ErrInvalid
	}
	return entries[match].label, nil
}
