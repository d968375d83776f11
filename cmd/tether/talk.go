package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherproxy/tether/dialect/live"
	"github.com/tetherproxy/tether/internal/talk"
)

func init() {
	extraCommands = append(extraCommands, newTalkCmd)
}

// newTalkCmd is `tether talk`: one voice turn through tether (or any
// OpenAI Realtime or, with --live, GPT-Live endpoint), as a smoke test. It
// exits non-zero when the turn fails.
func newTalkCmd() *cobra.Command {
	var (
		opts     talk.Options
		headers  []string
		liveMode bool
		model    string
	)
	cmd := &cobra.Command{
		Use:   "talk",
		Short: "Run one voice turn against a Realtime or GPT-Live endpoint and report it (smoke test)",
		Long: `talk connects to a Realtime WebSocket endpoint, streams audio (a WAV file of
16-bit PCM, mono, 24 kHz, or one second of a 440 Hz tone), commits the turn,
asks for a response and waits for response.done. It prints the session id, the
time to first audio, the audio received, the response status and the token
usage, and exits 1 on a timeout, an error event, a close before response.done,
a response that did not complete, or a reply without audio.

With --live it speaks GPT-Live instead (default URL
ws://127.0.0.1:8080/v1/live/sessions): it sends session.start with --model,
waits for session.started, streams the audio as 50 ms appends in real time and
then silence (GPT-Live needs a continuous stream), waits for the answer (an
output transcript delta after the caller's last words, and output audio that is
not silent), sends session.close and waits for session.closed. It prints the
session id, the time to first answer (last input transcript delta to the next
output transcript delta), the audio received, the usage seconds and the closed
reason, and exits 1 on a timeout, an error event, or a close (or session.closed)
before session.closed was asked for. --timeout covers the whole session,
real-time audio included.`,
		Example: `  tether talk
  tether talk --url ws://tether.voice.svc:8080/v1/realtime?model=gpt-realtime --wav hello.wav
  tether talk --header "Authorization=Bearer $TOKEN"
  tether talk --live
  tether talk --live --url wss://tether.example.com/v1/live/sessions --model gpt-live-1 --wav hello.wav`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := parseHeaders(headers)
			if err != nil {
				return err
			}
			opts.Headers = h
			opts.Out = cmd.OutOrStdout()
			if !liveMode {
				if cmd.Flags().Changed("model") {
					return fmt.Errorf("--model is for --live (a Realtime URL names the model in its query)")
				}
				return talk.Run(cmd.Context(), opts)
			}
			if !cmd.Flags().Changed("url") {
				opts.URL = talk.DefaultLiveURL
			}
			return talk.RunLive(cmd.Context(), talk.LiveOptions{Options: opts, Model: model})
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.URL, "url", "ws://127.0.0.1:8080/v1/realtime?model=gpt-realtime", "WebSocket URL (ws:// or wss://); with --live the default is "+talk.DefaultLiveURL)
	f.BoolVar(&liveMode, "live", false, "speak GPT-Live (session.start, continuous audio, session.close) instead of Realtime")
	f.StringVar(&model, "model", live.ModelGPTLive1, "GPT-Live model for session.start (with --live)")
	f.StringVar(&opts.WAV, "wav", "", "WAV file to send: 16-bit PCM, mono, 24 kHz (default: 1 s of a 440 Hz tone)")
	f.DurationVar(&opts.Timeout, "timeout", 30*time.Second, "time allowed for the whole turn (with --live: the whole session)")
	f.StringArrayVar(&headers, "header", nil, "extra upgrade request header as name=value (repeatable)")
	f.BoolVar(&opts.InsecureSkipVerify, "insecure", false, "skip TLS certificate verification for wss:// URLs")
	return cmd
}

// parseHeaders turns name=value flags into an http.Header.
func parseHeaders(kvs []string) (http.Header, error) {
	h := make(http.Header, len(kvs))
	for _, kv := range kvs {
		name, value, ok := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			// Never echo the value: it is usually a token.
			shown, _, _ := strings.Cut(name, ":")
			return nil, fmt.Errorf("--header %q...: want name=value (value not shown)", strings.TrimSpace(shown))
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return h, nil
}
