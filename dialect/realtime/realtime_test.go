package realtime

import (
	"reflect"
	"testing"

	"go.uber.org/goleak"

	"github.com/tetherproxy/tether/dialect"
	"github.com/tetherproxy/tether/dialect/dialecttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEventsBecomeSignals(t *testing.T) {
	var d Dialect
	r := &dialecttest.Recorder{}
	d.ClientEvent(r, []byte(InputAudioAppend)) // audio is no signal
	d.ClientEvent(r, []byte(InputAudioCommit))
	d.ClientEvent(r, []byte(ResponseCreate))
	d.UpstreamEvent(r, []byte(SpeechStopped), nil)
	d.UpstreamEvent(r, []byte(InputAudioTimeout), nil)
	d.UpstreamEvent(r, []byte(OutputAudioDelta), []byte("resp_1"))
	d.UpstreamEvent(r, []byte(BetaAudioDelta), []byte("resp_2"))
	d.UpstreamEvent(r, []byte("response.output_audio_transcript.delta"), []byte("resp_1"))
	d.UpstreamEvent(r, []byte("some.future_event"), nil)
	want := []string{"requested", "requested", "speech_ended", "speech_ended", "audio resp_1", "audio resp_2"}
	if !reflect.DeepEqual(r.Got, want) {
		t.Fatalf("signals %q, want %q", r.Got, want)
	}
}

func TestCapturedEventsAreDecoded(t *testing.T) {
	var d Dialect
	cases := []struct {
		typ, payload string
		want         []string
	}{
		{SessionCreated, `{"type":"session.created","session":{"id":"sess_1","model":"gpt-realtime","audio":{}}}`,
			[]string{"started sess_1 gpt-realtime"}},
		{SessionUpdated, `{"session":{"model":"gpt-realtime-mini"},"type":"session.updated"}`,
			[]string{"started  gpt-realtime-mini"}},
		{ResponseCreated, `{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}`,
			[]string{"answer resp_1"}},
		{ResponseDone, `{"type":"response.done","response":{"id":"resp_1","status":"completed"}}`,
			[]string{"done resp_1 completed"}},
		{Error, `{"type":"error","error":{"type":"invalid_request_error","code":"session_expired","message":"m"}}`,
			[]string{"error invalid_request_error session_expired"}},
		{Error, `{"type":"error","error":{"type":"server_error","code":null}}`, []string{"error server_error "}},
		{RateLimitsUpdated, `{"type":"rate_limits.updated","rate_limits":[{"name":"requests","limit":5000,"remaining":4999,"reset_seconds":0.01},{"name":"tokens","limit":400000,"remaining":398800,"reset_seconds":0.18}]}`,
			[]string{"limit requests", "limit tokens"}},
	}
	for _, tc := range cases {
		if !d.Capture([]byte(tc.typ)) {
			t.Errorf("%s not captured", tc.typ)
		}
		r := &dialecttest.Recorder{}
		d.Captured(r, []byte(tc.typ), []byte(tc.payload))
		if !reflect.DeepEqual(r.Got, tc.want) {
			t.Errorf("%s: signals %q, want %q", tc.typ, r.Got, tc.want)
		}
	}
	if d.Capture([]byte(OutputAudioDelta)) || d.Capture([]byte(InputAudioAppend)) {
		t.Error("audio events must never be captured")
	}
	if !d.Hold([]byte(Error)) || d.Hold([]byte(ResponseDone)) || d.Hold([]byte(OutputAudioDelta)) {
		t.Error("only error events are held for scrubbing")
	}
}

func TestResponseDoneUsage(t *testing.T) {
	r := &dialecttest.Recorder{}
	Dialect{}.Captured(r, []byte(ResponseDone), []byte(`{"type":"response.done","response":{"id":"r","status":"completed",
		"usage":{"total_tokens":412,"input_tokens":300,"output_tokens":112,
		"input_token_details":{"text_tokens":120,"audio_tokens":180,"image_tokens":0,"cached_tokens":64},
		"output_token_details":{"text_tokens":25,"audio_tokens":87}}}}`))
	want := dialect.Tokens{Input: 300, Output: 112, InputText: 120, InputAudio: 180, Cached: 64, OutputText: 25, OutputAudio: 87}
	if r.Usage != want {
		t.Fatalf("usage %+v, want %+v", r.Usage, want)
	}
}

func TestCheckFirst(t *testing.T) {
	cases := []struct {
		payload string
		want    dialect.Opening
	}{
		{`{"type":"session.created","session":{"id":"s"}}`, dialect.Opening{OK: true, Type: SessionCreated}},
		{`{"type":"error","error":{"type":"invalid_request_error","code":"invalid_api_key"}}`,
			dialect.Opening{Type: Error, ErrType: "invalid_request_error", Code: CodeInvalidAPIKey}},
		{`{"type":"session.updated"}`, dialect.Opening{Type: SessionUpdated}},
	}
	for _, tc := range cases {
		got, err := CheckFirst([]byte(tc.payload))
		if err != nil || got != tc.want {
			t.Errorf("CheckFirst(%s) = %+v, %v; want %+v", tc.payload, got, err, tc.want)
		}
	}
	if _, err := CheckFirst([]byte(`{"type":`)); err == nil {
		t.Error("malformed first event accepted")
	}
}
