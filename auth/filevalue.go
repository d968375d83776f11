package auth

import (
	"fmt"
	"os"
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

// fileValue is what a credentials file holds, parsed, and re-parsed when
// the file changes (checked at most once per reloadEvery, when the value is
// asked for). A file that cannot be read or parsed (a rewrite caught
// half-way) keeps the previous value and is tried again.
type fileValue[T any] struct {
	w       fileWatch
	setting string // the config key naming the file, for errors
	// parse turns the file's content into the value; first is the load at
	// startup, where every failure is an error.
	parse func(data []byte, first bool) (T, error)
	v     T // guarded by w.mu
}

// newFileValue loads the file at path, named setting in the config.
func newFileValue[T any](setting, path string, parse func(data []byte, first bool) (T, error)) (*fileValue[T], error) {
	f := &fileValue[T]{w: fileWatch{path: path}, setting: setting, parse: parse}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	if err := f.reload(true); err != nil {
		return nil, err
	}
	return f, nil
}

// get returns the value, re-read first if the file changed.
func (f *fileValue[T]) get() T {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	_ = f.reload(false)
	return f.v
}

// reload re-reads the file (see fileWatch.reload). Caller holds w.mu.
func (f *fileValue[T]) reload(force bool) error {
	return f.w.reload(f.setting, force, func(data []byte) error {
		v, err := f.parse(data, force)
		if err == nil {
			f.v = v
		}
		return err
	})
}
