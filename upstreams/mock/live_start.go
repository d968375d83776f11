package mock

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tetherproxy/tether/dialect/live"
)

// GPT-Live's strict schema, as far as the mock checks it: the members each
// object of session.start may have. Any other member is unknown_parameter.
var (
	startKeys        = []string{"type", "event_id", "session"}
	startSessionKeys = []string{"model", "instructions", "audio", "delegation", "input", "client", "store"}
	audioKeys        = []string{"format", "output"}
	formatKeys       = []string{"type", "rate"}
	audioOutputKeys  = []string{"voice"}
	delegationKeys   = []string{"type", "responses"}
	responsesKeys    = []string{"model", "instructions", "max_output_tokens", "parallel_tool_calls",
		"reasoning", "service_tier", "text", "tool_choice", "tools"}
	clientKeys      = []string{"data_channel"}
	dataChannelKeys = []string{"allowed_client_events", "allowed_server_events"}
)

// maxStartInput is the most messages session.start's input may hold.
const maxStartInput = 128

// liveError is an error event the mock sends for a client event it refuses.
type liveError struct {
	typ, code, msg, param string
}

func invalidRequest(code, param, msg string) *liveError {
	return &liveError{typ: live.ErrTypeInvalidRequest, code: code, msg: msg, param: param}
}

func unknownParam(param string) *liveError {
	return invalidRequest(live.CodeUnknownParameter, param, fmt.Sprintf("Unknown parameter: '%s'.", param))
}

func missingParam(param string) *liveError {
	return invalidRequest(live.CodeMissingParameter, param, fmt.Sprintf("Missing required parameter: '%s'.", param))
}

func invalidType(param, want string) *liveError {
	return invalidRequest(live.CodeInvalidType, param, fmt.Sprintf("Invalid type for '%s': expected %s.", param, want))
}

func invalidValue(param, msg string) *liveError {
	return invalidRequest(live.CodeInvalidValue, param, msg)
}

// startRequired is the answer to a first message that is not session.start.
func startRequired(got string) *liveError {
	msg := "The first message must be " + live.SessionStart + "."
	if got != "" {
		msg = fmt.Sprintf("The first message must be %s; got '%s'.", live.SessionStart, got)
	}
	return invalidRequest(live.CodeStartRequired, "", msg)
}

// jsonKind names the kind of a JSON value: "object", "array", "string",
// "boolean", "number", "null", or "" when raw is empty (the member is absent).
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// absent reports whether a member is missing or null (optional members
// treat both as "not given").
func absent(raw json.RawMessage) bool {
	k := jsonKind(raw)
	return k == "" || k == "null"
}

// object decodes the JSON object at param; an absent or null one is nil.
func object(raw json.RawMessage, param string) (map[string]json.RawMessage, *liveError) {
	if absent(raw) {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if jsonKind(raw) != "object" || json.Unmarshal(raw, &m) != nil {
		return nil, invalidType(param, "an object")
	}
	return m, nil
}

// checkedObject is object, and an unknown_parameter error for the first of
// its members not in allowed.
func checkedObject(raw json.RawMessage, param string, allowed []string) (map[string]json.RawMessage, *liveError) {
	m, e := object(raw, param)
	if e == nil {
		e = checkKeys(m, param+".", allowed)
	}
	return m, e
}

// stringAt decodes the JSON string at param; ok is false when it is absent
// or null.
func stringAt(raw json.RawMessage, param string) (s string, ok bool, e *liveError) {
	if absent(raw) {
		return "", false, nil
	}
	if jsonKind(raw) != "string" || json.Unmarshal(raw, &s) != nil {
		return "", false, invalidType(param, "a string")
	}
	return s, true, nil
}

// requiredString is stringAt for a member that must be given: absent or
// null, it is missing_required_parameter.
func requiredString(raw json.RawMessage, param string) (string, *liveError) {
	s, ok, e := stringAt(raw, param)
	if e == nil && !ok {
		e = missingParam(param)
	}
	return s, e
}

// checkKeys reports the first member of obj (in sorted order) not in
// allowed, as unknown_parameter prefix+key.
func checkKeys(obj map[string]json.RawMessage, prefix string, allowed []string) *liveError {
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if !slices.Contains(allowed, k) {
			return unknownParam(prefix + k)
		}
	}
	return nil
}

// liveResource is the GPT-Live session resource of session.started,
// session.updated and session.closed.
type liveResource struct {
	live.Session                 // id, model, expires_at, status
	Instructions string          `json:"instructions"`
	Audio        liveAudio       `json:"audio"`
	Delegation   map[string]any  `json:"delegation"`
	Input        json.RawMessage `json:"input"`
	Client       json.RawMessage `json:"client,omitempty"`
	Store        *bool           `json:"store,omitempty"`
}

type liveAudio struct {
	Format live.AudioFormat `json:"format"`
	Output struct {
		Voice json.RawMessage `json:"voice"`
	} `json:"output"`
}

// liveStart is an accepted session.start.
type liveStart struct {
	eventID string
	res     liveResource
	format  liveFormat
}

// parseStart checks the client's first message, which must be a valid
// session.start. On failure eventID is the message's event_id, if it has one.
func parseStart(msg []byte, id string) (st liveStart, eventID string, e *liveError) {
	var top map[string]json.RawMessage
	if json.Unmarshal(msg, &top) != nil || top == nil {
		return st, "", startRequired("")
	}
	if typ, _, _ := stringAt(top["type"], "type"); typ != live.SessionStart {
		return st, "", startRequired(typ)
	}
	eventID, _, e = stringAt(top["event_id"], "event_id")
	if e != nil {
		return st, "", e
	}
	if e = checkKeys(top, "", startKeys); e != nil {
		return st, eventID, e
	}
	if absent(top["session"]) {
		return st, eventID, missingParam("session")
	}
	sess, e := checkedObject(top["session"], "session", startSessionKeys)
	if e != nil {
		return st, eventID, e
	}
	st.eventID = eventID
	res := &st.res
	res.ID, res.Status = id, live.StatusActive
	res.ExpiresAt = time.Now().Add(time.Hour).Unix()

	model, e := requiredString(sess["model"], "session.model")
	switch {
	case e != nil:
		return st, eventID, e
	case model == "":
		return st, eventID, invalidValue("session.model", "Invalid value: ''. 'session.model' must name a model.")
	}
	res.Model = model
	if res.Instructions, _, e = stringAt(sess["instructions"], "session.instructions"); e != nil {
		return st, eventID, e
	}
	if st.format, e = parseAudio(sess["audio"], res); e != nil {
		return st, eventID, e
	}
	if res.Delegation, e = parseDelegation(sess["delegation"]); e != nil {
		return st, eventID, e
	}
	res.Input = json.RawMessage("[]")
	if raw := sess["input"]; !absent(raw) {
		var items []json.RawMessage
		if jsonKind(raw) != "array" || json.Unmarshal(raw, &items) != nil {
			return st, eventID, invalidType("session.input", "an array")
		}
		if len(items) > maxStartInput {
			return st, eventID, invalidValue("session.input",
				fmt.Sprintf("Invalid 'session.input': %d messages; at most %d are allowed.", len(items), maxStartInput))
		}
		res.Input = raw
	}
	if raw := sess["client"]; !absent(raw) {
		client, e := checkedObject(raw, "session.client", clientKeys)
		if e != nil {
			return st, eventID, e
		}
		if _, e = checkedObject(client["data_channel"], "session.client.data_channel", dataChannelKeys); e != nil {
			return st, eventID, e
		}
		res.Client = raw
	}
	if raw := sess["store"]; !absent(raw) {
		var store bool
		if jsonKind(raw) != "boolean" || json.Unmarshal(raw, &store) != nil {
			return st, eventID, invalidType("session.store", "a boolean")
		}
		res.Store = &store
	}
	return st, eventID, nil
}

// parseAudio checks session.audio and fills res.Audio with the resolved
// format (default PCM16 24 kHz) and voice (default marin).
func parseAudio(raw json.RawMessage, res *liveResource) (liveFormat, *liveError) {
	f := liveFormat{enc: formatPCM, rate: 24000}
	res.Audio.Format = live.AudioFormat{Type: live.FormatPCM, Rate: 24000}
	res.Audio.Output.Voice, _ = json.Marshal(live.DefaultVoice)
	audio, e := checkedObject(raw, "session.audio", audioKeys)
	if e != nil {
		return f, e
	}
	format, e := checkedObject(audio["format"], "session.audio.format", formatKeys)
	if e != nil {
		return f, e
	}
	if format != nil {
		typ, e := requiredString(format["type"], "session.audio.format.type")
		if e != nil {
			return f, e
		}
		rates := map[string][]int{live.FormatPCM: {24000, 16000}, live.FormatPCMU: {8000}, live.FormatPCMA: {8000}}[typ]
		if rates == nil {
			return f, invalidValue("session.audio.format.type", fmt.Sprintf(
				"Invalid value: '%s'. Supported values are: '%s', '%s', and '%s'.", typ, live.FormatPCM, live.FormatPCMU, live.FormatPCMA))
		}
		rate := rates[0]
		if raw := format["rate"]; !absent(raw) {
			if jsonKind(raw) != "number" || json.Unmarshal(raw, &rate) != nil {
				return f, invalidType("session.audio.format.rate", "an integer")
			}
			if !slices.Contains(rates, rate) {
				return f, invalidValue("session.audio.format.rate", fmt.Sprintf(
					"Invalid value: %d. Supported rates for '%s' are: %s.", rate, typ, joinInts(rates)))
			}
		}
		f.enc, _ = parseFormat(typ)
		f.rate = rate
		res.Audio.Format = live.AudioFormat{Type: typ, Rate: rate}
	}
	output, e := checkedObject(audio["output"], "session.audio.output", audioOutputKeys)
	if e != nil {
		return f, e
	}
	switch raw := output["voice"]; jsonKind(raw) {
	case "", "null":
	case "string":
		var v string
		if json.Unmarshal(raw, &v) != nil || v == "" {
			return f, invalidValue("session.audio.output.voice", "Invalid value: ''. Name a built-in voice or give {\"id\": ...}.")
		}
		res.Audio.Output.Voice = raw
	case "object":
		var v map[string]json.RawMessage
		_ = json.Unmarshal(raw, &v)
		if e = checkKeys(v, "session.audio.output.voice.", []string{"id"}); e != nil {
			return f, e
		}
		if id, ok, e := stringAt(v["id"], "session.audio.output.voice.id"); e != nil || !ok || id == "" {
			return f, cmp.Or(e, missingParam("session.audio.output.voice.id"))
		}
		res.Audio.Output.Voice = raw
	default:
		return f, invalidType("session.audio.output.voice", "a string or an object")
	}
	return f, nil
}

// parseDelegation checks session.start's session.delegation and returns
// the resolved one ({"type":"client"} when absent or null).
func parseDelegation(raw json.RawMessage) (map[string]any, *liveError) {
	d, e := checkedObject(raw, "session.delegation", delegationKeys)
	if e != nil {
		return nil, e
	}
	if d == nil {
		return map[string]any{"type": live.DelegationClient}, nil
	}
	typ, e := requiredString(d["type"], "session.delegation.type")
	if e != nil {
		return nil, e
	}
	if typ != live.DelegationClient && typ != live.DelegationResponses {
		return nil, invalidValue("session.delegation.type", fmt.Sprintf(
			"Invalid value: '%s'. Supported values are: '%s' and '%s'.", typ, live.DelegationClient, live.DelegationResponses))
	}
	out := map[string]any{"type": typ}
	settings, e := parseResponses(d["responses"], typ)
	if e != nil {
		return nil, e
	}
	if typ == live.DelegationResponses {
		if settings == nil {
			settings = map[string]any{}
		}
		out["responses"] = settings
	}
	return out, nil
}

// parseResponses checks session.delegation.responses for a delegation of
// type typ; nil when absent.
func parseResponses(raw json.RawMessage, typ string) (map[string]any, *liveError) {
	const param = "session.delegation.responses"
	r, e := object(raw, param)
	if e != nil || r == nil {
		return nil, e
	}
	if typ != live.DelegationResponses {
		return nil, invalidValue(param, fmt.Sprintf("'%s' is only valid with delegation type '%s'.", param, live.DelegationResponses))
	}
	if e = checkKeys(r, param+".", responsesKeys); e != nil {
		return nil, e
	}
	out := make(map[string]any, len(r))
	for k, v := range r {
		out[k] = v // json.RawMessage: re-encoded as it came
	}
	return out, nil
}

// updateDelegation applies session.update's sparse session.delegation to
// cur (which it does not modify) and returns the new delegation.
func updateDelegation(raw json.RawMessage, cur map[string]any) (map[string]any, *liveError) {
	d, e := checkedObject(raw, "session.delegation", delegationKeys)
	if e != nil || d == nil {
		return cur, e
	}
	curType, _ := cur["type"].(string)
	typ, ok, e := stringAt(d["type"], "session.delegation.type")
	if e != nil {
		return nil, e
	}
	if ok && typ != curType {
		return nil, invalidRequest(live.CodeImmutableFieldUpdate, "session.delegation.type", fmt.Sprintf(
			"Cannot update 'session.delegation.type' from '%s' to '%s': the delegation type is immutable.", curType, typ))
	}
	settings, e := parseResponses(d["responses"], curType)
	if e != nil {
		return nil, e
	}
	out := maps.Clone(cur)
	if settings != nil {
		merged := map[string]any{}
		if prev, ok := cur["responses"].(map[string]any); ok {
			maps.Copy(merged, prev)
		}
		maps.Copy(merged, settings)
		out["responses"] = merged
	}
	return out, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}
