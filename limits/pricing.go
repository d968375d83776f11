package limits

import (
	"strings"

	"github.com/tetherproxy/tether/dialect"
)

// Pricing maps a model to its price (the pricing key). A model is priced by
// its own entry, else by the longest entry it starts with followed by "-"
// ("gpt-realtime" prices "gpt-realtime-2025-08-28").
type Pricing map[string]Price

// Lookup returns the price of model.
func (p Pricing) Lookup(model string) (Price, bool) {
	if pr, ok := p[model]; ok {
		return pr, true
	}
	best, found := "", false
	for name := range p {
		if len(name) > len(best) && strings.HasPrefix(model, name+"-") {
			best, found = name, true
		}
	}
	return p[best], found
}

// perToken is the unit of Price's token rates.
const perToken = 1e-6

// Cost is the USD cost of tokens and audioSeconds of billed audio at p.
// Cached tokens are billed at the cached rates; where the upstream gives
// only their total, they count as text as far as the input's text goes,
// the rest as audio.
func (p Price) Cost(t dialect.Tokens, audioSeconds float64) float64 {
	cachedText, cachedAudio := t.CachedText, t.CachedAudio
	if rest := t.Cached - cachedText - cachedAudio; rest > 0 {
		// Text first, what text cannot hold to audio.
		toText := rest
		if t.InputText > 0 || t.InputAudio > 0 {
			toText = min(rest, max(t.InputText-cachedText, 0))
		}
		cachedText += toText
		cachedAudio += rest - toText
	}
	inText, inAudio := t.InputText, t.InputAudio
	if inText == 0 && inAudio == 0 {
		// No split: the whole input is text.
		inText = t.Input
	}
	outText, outAudio := t.OutputText, t.OutputAudio
	if outText == 0 && outAudio == 0 {
		outText = t.Output
	}
	usd := float64(max(inText-cachedText, 0))*p.InputText + float64(min(cachedText, inText))*p.CachedInputText +
		float64(max(inAudio-cachedAudio, 0))*p.InputAudio + float64(min(cachedAudio, inAudio))*p.CachedInputAudio +
		float64(outText)*p.OutputText + float64(outAudio)*p.OutputAudio
	return usd*perToken + audioSeconds/60*p.PerMinute
}
