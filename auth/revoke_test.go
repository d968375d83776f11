package auth

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Emptying (or commenting out) the tokens file revokes every token.
func TestEmptyTokensFileRevokesAll(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(p, []byte("tok-secret-1 app\n"), 0o600)
	tk, err := NewTokens(p)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte("# all access revoked\n"), 0o600)
	os.Chtimes(p, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	tk.list.w.mu.Lock()
	tk.list.w.checked = time.Time{} // skip the once-a-second stat throttle
	tk.list.w.mu.Unlock()
	r, _ := http.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer tok-secret-1")
	if id, err := tk.Authenticate(r); err == nil {
		t.Errorf("revoked token still accepted as %q after the file was emptied", id)
	}
}
