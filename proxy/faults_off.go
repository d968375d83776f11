//go:build !tetherfaults

package proxy

import "github.com/tetherproxy/tether/lifecycle"

// faultHook is a test-only fault injection point; in normal builds it is
// empty and compiled away. See faults_on.go (build tag tetherfaults).
func faultHook(lifecycle.Direction, []byte) {}
