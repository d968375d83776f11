package limits

import (
	"math"
	"testing"

	"github.com/tetherproxy/tether/dialect"
)

// published are the list prices (USD per 1M tokens; per minute for
// GPT-Live) on the models' pages at developers.openai.com, as the README's
// pricing example gives them.
var published = Pricing{
	"gpt-realtime":      {InputText: 4, CachedInputText: 0.4, OutputText: 16, InputAudio: 32, CachedInputAudio: 0.4, OutputAudio: 64},
	"gpt-realtime-mini": {InputText: 0.6, CachedInputText: 0.06, OutputText: 2.4, InputAudio: 10, CachedInputAudio: 0.3, OutputAudio: 20},
	"gpt-realtime-2":    {InputText: 4, CachedInputText: 0.4, OutputText: 24, InputAudio: 32, CachedInputAudio: 0.4, OutputAudio: 64},
	"gpt-live-1":        {PerMinute: 0.05},
}

func TestCostAtPublishedPrices(t *testing.T) {
	// The usage of realtime-protocol.md's response.done example: 120 text +
	// 180 audio input tokens of which 64 text tokens were cached; 30 text +
	// 210 audio output tokens.
	example := dialect.Tokens{Input: 300, Output: 240, InputText: 120, InputAudio: 180, Cached: 64, CachedText: 64,
		OutputText: 30, OutputAudio: 210}
	for _, tc := range []struct {
		name   string
		model  string
		tokens dialect.Tokens
		audio  float64
		want   float64 // worked out by hand from the list prices
	}{
		// (120-64)*4 + 64*0.4 + 180*32 + 30*16 + 210*64 = 224+25.6+5760+480+13440 = 19929.6 per 1M
		{"realtime example turn", "gpt-realtime", example, 0, 0.0199296},
		{"dated snapshot priced by its family", "gpt-realtime-2025-08-28", example, 0, 0.0199296},
		// (56*0.6 + 64*0.06 + 180*10 + 30*2.4 + 210*20) = 33.6+3.84+1800+72+4200 = 6109.44 per 1M
		{"mini: its own entry, not gpt-realtime's", "gpt-realtime-mini", example, 0, 0.00610944},
		// 56*4 + 25.6 + 5760 + 30*24 + 13440 = 20169.6 per 1M
		{"realtime-2 output text rate", "gpt-realtime-2", example, 0, 0.0201696},
		// An hour of caller audio at 10 tokens a second: 36000*32/1M = 1.152
		{"an hour of caller audio", "gpt-realtime", dialect.Tokens{Input: 36000, InputAudio: 36000}, 0, 1.152},
		// cached audio: 1000 audio input of which 800 cached: 200*32 + 800*0.4 = 6720 per 1M
		{"cached audio", "gpt-realtime", dialect.Tokens{Input: 1000, InputAudio: 1000, Cached: 800, CachedAudio: 800}, 0, 0.00672},
		// cached total without a split, audio-only input: billed as cached audio
		{"cached without a split", "gpt-realtime", dialect.Tokens{Input: 1000, InputAudio: 1000, Cached: 800}, 0, 0.00672},
		// no text/audio split at all: input and output count as text
		{"no split", "gpt-realtime", dialect.Tokens{Input: 1000, Output: 500}, 0, (1000*4 + 500*16) / 1e6},
		// GPT-Live: $0.05 per minute, billed per second
		{"live 90 s", "gpt-live-1", dialect.Tokens{}, 90, 0.075},
		{"live 1 s", "gpt-live-1", dialect.Tokens{}, 1, 0.05 / 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := published.Lookup(tc.model)
			if !ok {
				t.Fatalf("no price for %s", tc.model)
			}
			if got := p.Cost(tc.tokens, tc.audio); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("cost = %.10f, want %.10f", got, tc.want)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	for model, want := range map[string]string{
		"gpt-realtime": "gpt-realtime", "gpt-realtime-mini-2025-10-06": "gpt-realtime-mini",
		"gpt-realtime-2": "gpt-realtime-2", "gpt-live-1": "gpt-live-1",
	} {
		p, ok := published.Lookup(model)
		if !ok || p != published[want] {
			t.Errorf("Lookup(%s) = %+v, %v; want %s's price", model, p, ok, want)
		}
	}
	for _, model := range []string{"", "gpt-realtimer", "gpt-4o", "gpt-live"} {
		if _, ok := published.Lookup(model); ok {
			t.Errorf("Lookup(%q) found a price", model)
		}
	}
}
