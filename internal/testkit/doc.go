// Package testkit is the repository's shared test kit: a WebSocket test
// client ([Conn]) and server ([Server]) built on github.com/gobwas/ws, a
// poll helper ([WaitFor]), a goroutine-safe buffer ([SyncBuffer]), a
// throwaway certificate authority ([CA]) and small network helpers. Its
// subpackage prom reads Prometheus counters (apart, so that the modules
// importing testkit need no Prometheus).
//
// Only tests import it (the package tests of this module, e2e and
// cmd/tether-bench); product code must not.
package testkit
