package mock

import (
	"fmt"
	"maps"
	"slices"
)

// sessionConfig is what the mock acts on, derived from the session object.
type sessionConfig struct {
	inFormat     audioFormat
	outFormat    audioFormat
	vad          bool // turn_detection is server_vad or semantic_vad
	silenceMs    int  // turn_detection.silence_duration_ms
	prefixMs     int  // turn_detection.prefix_padding_ms
	autoResponse bool // turn_detection.create_response
	interrupt    bool // turn_detection.interrupt_response
	transcribe   bool // audio.input.transcription is set
	instructions string
	voice        string
}

// newSessionObject is the GA session object a session starts with.
func newSessionObject(id, model string, expiresAt int64) map[string]any {
	return map[string]any{
		"object":            "realtime.session",
		"id":                id,
		"type":              "realtime",
		"model":             model,
		"output_modalities": []any{"audio"},
		"instructions":      "",
		"expires_at":        expiresAt,
		"audio": map[string]any{
			"input": map[string]any{
				"format":          map[string]any{"type": "audio/pcm", "rate": 24000},
				"transcription":   nil,
				"noise_reduction": nil,
				"turn_detection":  nil,
			},
			"output": map[string]any{
				"format": map[string]any{"type": "audio/pcm", "rate": 24000},
				"voice":  "alloy",
				"speed":  1.0,
			},
		},
		"tools":             []any{},
		"tool_choice":       "auto",
		"max_output_tokens": "inf",
		"tracing":           nil,
		"prompt":            nil,
		"include":           nil,
	}
}

// readOnlySessionKeys are kept from the current session whatever an update says.
var readOnlySessionKeys = []string{"object", "id", "expires_at"}

// mergeSession returns cur with upd merged in: objects merge member by
// member, anything else (null included) replaces. Neither argument is
// modified; unchanged nested objects are shared, which is safe because
// nothing modifies a session object in place.
func mergeSession(cur, upd map[string]any) map[string]any {
	out := maps.Clone(cur)
	for k, v := range upd {
		if slices.Contains(readOnlySessionKeys, k) {
			continue
		}
		if um, ok := v.(map[string]any); ok {
			if cm, ok := out[k].(map[string]any); ok {
				out[k] = mergeSession(cm, um)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// path returns the member of nested objects m at keys, or nil.
func path(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[k]
	}
	return v
}

// paramError is a session.update the mock rejects.
type paramError struct {
	param string
	msg   string
}

func (e *paramError) Error() string { return e.msg }

// normalizeSession fills the defaults of a turn_detection object in place
// (its map is fresh from the client's JSON, or a copy made here) and derives
// the config. It rejects values the mock does not understand.
func normalizeSession(s map[string]any) (sessionConfig, *paramError) {
	var cfg sessionConfig
	if t, ok := s["type"]; ok && t != "realtime" {
		return cfg, &paramError{"session.type", fmt.Sprintf("Invalid value: %v. Supported values are: 'realtime'.", t)}
	}
	var ok bool
	for _, dir := range []string{"input", "output"} {
		typ, _ := path(s, "audio", dir, "format", "type").(string)
		f, good := parseFormat(typ)
		if !good {
			return cfg, &paramError{"session.audio." + dir + ".format.type",
				fmt.Sprintf("Invalid value: '%s'. Supported values are: 'audio/pcm', 'audio/pcmu' and 'audio/pcma'.", typ)}
		}
		if rate, has := path(s, "audio", dir, "format").(map[string]any)["rate"]; has && f == formatPCM && toInt(rate, 24000) != 24000 {
			return cfg, &paramError{"session.audio." + dir + ".format.rate", "Invalid value: only 24000 is supported for audio/pcm."}
		}
		if dir == "input" {
			cfg.inFormat = f
		} else {
			cfg.outFormat = f
		}
	}
	if cfg.instructions, ok = s["instructions"].(string); !ok && s["instructions"] != nil {
		return cfg, &paramError{"session.instructions", "Invalid type for 'session.instructions': expected a string."}
	}
	cfg.voice, _ = path(s, "audio", "output", "voice").(string)
	cfg.transcribe = path(s, "audio", "input", "transcription") != nil

	switch td := path(s, "audio", "input", "turn_detection").(type) {
	case nil:
	case map[string]any:
		typ, _ := td["type"].(string)
		if typ != "server_vad" && typ != "semantic_vad" {
			return cfg, &paramError{"session.audio.input.turn_detection.type",
				fmt.Sprintf("Invalid value: '%s'. Supported values are: 'server_vad' and 'semantic_vad'.", typ)}
		}
		td = maps.Clone(td)
		defaults := map[string]any{"create_response": true, "interrupt_response": true}
		if typ == "server_vad" {
			defaults["threshold"] = 0.5
			defaults["prefix_padding_ms"] = 300
			defaults["silence_duration_ms"] = 500
			defaults["idle_timeout_ms"] = nil
		} else {
			defaults["eagerness"] = "auto"
		}
		for k, v := range defaults {
			if _, has := td[k]; !has {
				td[k] = v
			}
		}
		audio := maps.Clone(s["audio"].(map[string]any))
		input := maps.Clone(audio["input"].(map[string]any))
		input["turn_detection"] = td
		audio["input"] = input
		s["audio"] = audio

		cfg.vad = true
		cfg.silenceMs = max(toInt(td["silence_duration_ms"], 500), vadWindowMillis)
		cfg.prefixMs = max(toInt(td["prefix_padding_ms"], 300), 0)
		cfg.autoResponse = td["create_response"] != false
		cfg.interrupt = td["interrupt_response"] != false
	default:
		return cfg, &paramError{"session.audio.input.turn_detection", "Invalid type for 'session.audio.input.turn_detection': expected an object or null."}
	}
	return cfg, nil
}

// toInt reads a JSON number (or the int of a default), else def.
func toInt(v any, def int) int {
	switch n := v.(type) {
	case float64:
		return int(n)
	case int:
		return n
	}
	return def
}
