package redact

import (
	"net/url"
	"strings"
)

// urlMark replaces a query value in a redacted URL ("[redacted]" would be
// escaped there).
const urlMark = "REDACTED"

// plainParams are query parameters whose values never carry a credential and
// help a reader: they keep their value in a redacted URL.
var plainParams = map[string]bool{"model": true, "api-version": true, "deployment": true, "intent": true}

// URL returns raw fit for a log line, an error or a report: without user
// info and fragment, and with the value of every query parameter except
// model, api-version, deployment and intent replaced by REDACTED (a key may
// ride in any parameter: api-key, key, access_token, sig...). A bare
// host:port stays as it is.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil && strings.Contains(raw, "://") {
		return "(unparsable URL)" // its user info may hold a password
	}
	bare := err != nil || u.Opaque != "" // host:port parses as scheme:opaque, or not at all
	if bare {
		if u, err = url.Parse("//" + raw); err != nil {
			return "(unparsable URL)"
		}
	}
	u.User, u.Fragment, u.RawFragment = nil, "", ""
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			if plainParams[strings.ToLower(k)] {
				continue
			}
			for i := range vs {
				vs[i] = urlMark
			}
		}
		u.RawQuery = q.Encode()
	}
	s := u.String()
	if bare {
		s = strings.TrimPrefix(s, "//")
	}
	return s
}
