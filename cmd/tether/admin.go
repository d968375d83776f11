package main

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tetherproxy/tether/lifecycle"
	"github.com/tetherproxy/tether/limits"
	"github.com/tetherproxy/tether/metrics"
)

// newAdminMux serves the admin endpoints of the contract.
func newAdminMux(mgr *lifecycle.Manager, m *metrics.Metrics, lim *limits.Enforcer, withPprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if mgr.Draining() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, mgr.Snapshots())
	})
	mux.HandleFunc("GET /sessions/{id}", withSession(mgr, func(w http.ResponseWriter, s *lifecycle.Session) {
		writeJSON(w, http.StatusOK, s.Snapshot())
	}))
	mux.HandleFunc("DELETE /sessions/{id}", withSession(mgr, func(w http.ResponseWriter, s *lifecycle.Session) {
		s.End(lifecycle.ReasonAdmin)
		writeJSON(w, http.StatusOK, map[string]string{"id": s.ID, "status": "closed"})
	}))
	// {client...}: an identity (a JWT sub) may hold slashes.
	mux.HandleFunc("GET /limits/{client...}", func(w http.ResponseWriter, r *http.Request) {
		st, err := lim.Status(r.Context(), r.PathValue("client"))
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "limits store unavailable"})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// withSession hands the session the path's {id} names to handle, or
// answers 404 when there is none.
func withSession(mgr *lifecycle.Manager, handle func(http.ResponseWriter, *lifecycle.Session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := mgr.Get(r.PathValue("id"))
		if s == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such session"})
			return
		}
		handle(w, s)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
