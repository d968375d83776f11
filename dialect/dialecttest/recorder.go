// Package dialecttest holds what the dialects' tests share: a dialect.Signals
// that writes down what it is told, and the session's way of handing a
// dialect.Memory its events.
package dialecttest

import (
	"fmt"

	"github.com/tetherproxy/tether/dialect"
)

// Recorder writes down the signals it gets, one line each.
type Recorder struct {
	Got []string
	// Usage is the usage of the last AnswerDone or TokensUsed.
	Usage dialect.Tokens
}

var _ dialect.Signals = (*Recorder)(nil)

func (r *Recorder) add(s string) { r.Got = append(r.Got, s) }

func (r *Recorder) SessionStarted(id, model string) { r.add("started " + id + " " + model) }
func (r *Recorder) AnswerRequested()                { r.add("requested") }
func (r *Recorder) CallerActive()                   { r.add("caller") }
func (r *Recorder) SpeechStarted()                  { r.add("speech_started") }
func (r *Recorder) SpeechEnded()                    { r.add("speech_ended") }
func (r *Recorder) AnswerStarted(id string)         { r.add("answer " + id) }
func (r *Recorder) AnswerAudio(id []byte)           { r.add("audio " + string(id)) }
func (r *Recorder) AnswerSpoken()                   { r.add("spoken") }
func (r *Recorder) AnswerDone(id, status string, u dialect.Tokens) {
	r.add("done " + id + " " + status)
	r.Usage = u
}
func (r *Recorder) TokensUsed(u dialect.Tokens) {
	r.add(fmt.Sprintf("tokens %d/%d", u.Input, u.Output))
	r.Usage = u
}
func (r *Recorder) AudioSeconds(total float64)     { r.add(fmt.Sprintf("seconds %g", total)) }
func (r *Recorder) UpstreamEnded(reason string)    { r.add("ended " + reason) }
func (r *Recorder) UpstreamError(typ, code string) { r.add("error " + typ + " " + code) }
func (r *Recorder) RateLimits(l []dialect.RateLimit) {
	for _, x := range l {
		r.add("limit " + x.Name)
	}
}
