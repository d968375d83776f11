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
	"strings"
)

// tokenEntry is one accepted token: its SHA-256 and a label for logs.
type tokenEntry struct {
	sum   [sha256.Size]byte
	label string
}

// Tokens accepts the tokens listed in a file, one per line: a plain token or
// `sha256:<hex>` of one. Blank lines and lines starting with # are ignored;
// an optional label follows the token after whitespace ("tok123 app-a").
// The file is re-read when it changes (see fileValue); a rewrite that lists
// no token revokes them all.
type Tokens struct {
	list *fileValue[[]tokenEntry]
}

// NewTokens loads path; an unreadable or empty file is an error.
func NewTokens(path string) (*Tokens, error) {
	list, err := newFileValue("tokens_file", path, func(data []byte, first bool) ([]tokenEntry, error) {
		entries, err := parseTokens(data)
		switch {
		case errors.Is(err, errNoTokens) && !first:
			return nil, nil // every token revoked
		case err != nil:
			return nil, fmt.Errorf("tokens_file %s: %w", path, err)
		}
		return entries, nil
	})
	if err != nil {
		return nil, err
	}
	return &Tokens{list: list}, nil
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
	entries := t.list.get()
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
