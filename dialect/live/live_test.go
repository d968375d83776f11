package live

import (
	"reflect"
	"testing"

	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/dialect/dialecttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEventsBecomeSignals(t *testing.T) {
	var d Dialect
	r := &dialecttest.Recorder{}
	captured := func(typ, payload string) {
		if !d.Capture([]byte(typ)) {
			t.Errorf("%s is not captured", typ)
		}
		d.Captured(r, []byte(typ), []byte(payload))
	}
	captured(SessionStarted, `{"type":"session.started","session":{"id":"live_1","model":"gpt-live-1","expires_at":1791373550}}`)
	for _, typ := range []string{OutputAudioDelta, InputTranscriptDelta, OutputTranscriptDelta, "session.future_event"} {
		d.UpstreamEvent(r, []byte(typ), nil)
	}
	captured(UsageUpdated, `{"type":"session.usage.updated","usage":{"seconds":7}}`)
	captured(ResponseEvent, `{"type":"response.event","event":{"type":"response.output_text.delta","delta":"x"}}`)
	captured(ResponseEvent, `{"type":"response.event","event":{"type":"response.completed","response":{"id":"resp_1",`+
		`"usage":{"input_tokens":30,"output_tokens":12,"input_tokens_details":{"cached_tokens":4}}}}}`)
	captured(Error, `{"type":"error","error":{"type":"invalid_request_error","code":"invalid_audio","message":"odd","client_event_id":"e1"}}`)
	captured(SessionClosed, `{"type":"session.closed","reason":"expired","usage":{"seconds":9.5}}`)
	want := []string{"started live_1 gpt-live-1", "speech_ended", "spoken", "seconds 7", "tokens 30/12",
		"error invalid_request_error invalid_audio", "seconds 9.5", "ended expired"}
	if !reflect.DeepEqual(r.Got, want) {
		t.Errorf("signals\n got %q\nwant %q", r.Got, want)
	}
	if r.Usage.Cached != 4 {
		t.Errorf("cached tokens %d, want 4", r.Usage.Cached)
	}
	if d.Capture([]byte(OutputAudioDelta)) || !d.Hold([]byte(Error)) || d.Hold([]byte(SessionStarted)) {
		t.Error("audio must not be captured; only error events are held")
	}
}

func TestParseStart(t *testing.T) {
	st, err := ParseStart([]byte(`{"type":"session.start","event_id":"e1","session":{"model":"gpt-live-1","audio":{"format":{"type":"audio/pcmu","rate":8000}}}}`))
	if err != nil || st.Model != "gpt-live-1" || st.EventID != "e1" || st.Format.BytesPerSecond() != 8000 {
		t.Errorf("ParseStart = %+v, %v", st, err)
	}
	if st, err := ParseStart([]byte(`{"type":"session.start","session":{}}`)); err != nil || st.Model != "" || st.Format.BytesPerSecond() != 48000 {
		t.Errorf("a start without a model: %+v, %v (the service's error to give, not tether's)", st, err)
	}
	for _, bad := range []string{`{"type":"session.input_audio.append"}`, `not json`, `[]`,
		`{"TYPE":"session.start"}`, `{"type":"session.start","type":"x"}`,
		`{"type":"session.start","session":{"model":"gpt-evil","model":null}}`,
		`{"type":"session.start","session":{"model":"gpt-evil","Model":"gpt-live-1"}}`,
		`{"type":"session.start","session":{"model":7}}`,
		`{"type":"session.start","session":{"model":"gpt-live-1"}`, `{"type":"session.start"}{}`,
		`{"type":"session.start","session":{"model":"gpt-live-1"}} junk`} {
		if _, err := ParseStart([]byte(bad)); err == nil {
			t.Errorf("ParseStart(%s) succeeded", bad)
		}
	}
	// What tether does not read is the service's to judge.
	st, err = ParseStart([]byte(`{"type":"session.start","event_id":7,"session":{"model":null,"audio":{"format":{"type":"audio/pcm","rate":24000.0}}}}`))
	if err != nil || st.Model != "" || st.Format.BytesPerSecond() != 48000 {
		t.Errorf("lenient fields: %+v, %v", st, err)
	}
}
