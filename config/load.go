package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"github.com/tetherproxy/tether/limits"
	"go.yaml.in/yaml/v3"
)

// Load returns the configuration from the YAML file at path (none when path
// is ""), on top of Default, with TETHER_<PATH> environment overrides
// applied, upstream defaults filled and everything validated.
//
// Reading the file and YAML syntax errors give a plain error naming the
// file. Every other problem (unknown keys, values of the wrong type,
// validation rules) is reported at once in a *ValidationError, each with its
// key path. On error the returned *Config is nil.
//
// Keys match their names case-insensitively; two keys of one mapping that
// differ only in case are a problem.
//
// Environment overrides: every key outside the upstreams list has a
// variable, TETHER_ + the key path upper-cased with dots replaced by
// underscores (lifecycle.heartbeat.client.interval is
// TETHER_LIFECYCLE_HEARTBEAT_CLIENT_INTERVAL). A value is parsed for its
// key's type (a duration such as "30s", an integer, a number, true/false);
// a list key takes comma-separated items, trimmed. An empty variable is
// ignored. An override wins over the file, except under a key that the file
// sets to a non-mapping value (which is then reported as a problem).
//
// A key written with no value ("server:") keeps its default; so does an
// upstream's dial_timeout of 0. Upstream header names are stored in
// canonical form.
func Load(path string) (*Config, error) {
	// yaml.v3 parses the file once into a document; the overrides, read by
	// viper, are written into it; mapstructure decodes it onto Default, rejecting
	// unknown keys (ErrorUnused) and naming every failed key by its path.
	doc := map[string]any{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		if doc == nil { // the document is "~"
			doc = map[string]any{}
		}
		stringKeys(doc)
	}
	applyEnv(doc)

	var decodeProblems problems
	// mapstructure leaves a null list entry at its zero value; upstreams is
	// the only list of mappings.
	if list, ok := doc[foldKey(doc, "upstreams")].([]any); ok {
		for i, e := range list {
			if e == nil {
				decodeProblems.add(fmt.Sprintf("upstreams[%d]", i), "empty entry; remove it or give its keys")
			}
		}
	}
	cfg := Default()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:              keyTag,
		DecodeHook:           decodeHook,
		ErrorUnused:          true, // unknown keys are an error
		IgnoreUntaggedFields: true, // run-time-only fields are not configurable
		Result:               cfg,
	})
	if err != nil {
		return nil, fmt.Errorf("config decoder: %w", err)
	}
	collectDecodeErrors(&decodeProblems, dec.Decode(doc))
	resolveLimits(cfg, doc, &decodeProblems)

	if cfg.Upstreams != nil {
		fillUpstreamListDefaults(cfg.Upstreams)
	}

	// A value that failed to decode kept its default (or zero, inside a new
	// list entry); a rule about it would only repeat the decode problem.
	var validationProblems problems
	cfg.validate(&validationProblems)
	all := decodeProblems
	for _, p := range validationProblems {
		if !coveredBy(p.Path, decodeProblems) {
			all = append(all, p)
		}
	}
	if err := all.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// resolveLimits applies auth.max_sessions_per_client, the older name of
// limits.max_sessions, and gives every limits override the keys it leaves
// out: each is decoded again from the file, onto the top-level limits.
func resolveLimits(cfg *Config, doc map[string]any, ps *problems) {
	l := &cfg.Limits
	if a := cfg.Auth.MaxSessionsPerClient; a > 0 {
		if l.MaxSessions > 0 && l.MaxSessions != a {
			ps.add("auth.max_sessions_per_client", "is the older name of limits.max_sessions: set one (got %d and %d)", a, l.MaxSessions)
		}
		l.MaxSessions = cmp.Or(l.MaxSessions, a)
	}
	raw, _ := doc[foldKey(doc, "limits")].(map[string]any)
	overrides, _ := raw[foldKey(raw, "overrides")].(map[string]any)
	for _, label := range sortedKeys(overrides) {
		keys, _ := overrides[label].(map[string]any)
		path := "limits.overrides[" + label + "]"
		for _, k := range []string{"window", "boundary_timeout", "client_metrics", "overrides"} {
			if _, set := keys[foldKey(keys, k)]; set {
				ps.add(joinKey(path, k), "applies to all clients: set it in limits, not in an override")
			}
		}
		if l.Overrides == nil {
			l.Overrides = map[string]limits.Config{}
		}
		o := *l
		o.Overrides = nil
		dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{TagName: keyTag, DecodeHook: decodeHook, IgnoreUntaggedFields: true, Result: &o})
		if err == nil && dec.Decode(keys) == nil {
			l.Overrides[label] = o // a key that fails to decode was reported by the first decode
		}
	}
}

// coveredBy reports whether path is, or lies under, the path of one of ps.
func coveredBy(path string, ps problems) bool {
	for _, p := range ps {
		if path == p.Path ||
			strings.HasPrefix(path, p.Path+".") || strings.HasPrefix(path, p.Path+"[") {
			return true
		}
	}
	return false
}

// stringKeys gives every nested mapping of v string keys, as mapstructure
// needs: yaml.v3 returns map[any]any for a mapping with a key that is not a
// string. Keys that render alike (1 and 1.0) keep one value, chosen in a
// fixed order.
func stringKeys(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = stringKeys(e)
		}
	case map[any]any:
		keys := make([]any, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b any) int {
			return strings.Compare(fmt.Sprintf("%T %v", a, a), fmt.Sprintf("%T %v", b, b))
		})
		m := make(map[string]any, len(v))
		for _, k := range keys {
			if _, taken := m[fmt.Sprint(k)]; !taken {
				m[fmt.Sprint(k)] = stringKeys(v[k])
			}
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = stringKeys(e)
		}
	}
	return v
}

// applyEnv writes every set, non-empty override into doc, over the file's
// value. An override under a key that the file sets to a non-mapping value
// is left out, so that decoding reports the file's value.
func applyEnv(doc map[string]any) {
	// viper reads the environment: TETHER_ + the key path with dots as
	// underscores (its key replacer), an empty variable counting as unset.
	env := viper.New()
	env.SetEnvPrefix(EnvPrefix)
	env.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
keys:
	for _, key := range envKeys() {
		_ = env.BindEnv(key)
		val := env.GetString(key)
		if val == "" {
			continue
		}
		m := doc
		segs := strings.Split(key, ".")
		for _, seg := range segs[:len(segs)-1] {
			k := foldKey(m, seg)
			switch child := m[k].(type) {
			case nil:
				next := map[string]any{}
				m[k] = next
				m = next
			case map[string]any:
				m = child
			default:
				continue keys
			}
		}
		m[foldKey(m, segs[len(segs)-1])] = val
	}
}

// foldKey returns the key of m that matches key as mapstructure matches
// it (exactly, else case-insensitively), or key when none does.
func foldKey(m map[string]any, key string) string {
	if _, ok := m[key]; ok {
		return key
	}
	for _, k := range sortedKeys(m) {
		if strings.EqualFold(k, key) {
			return k
		}
	}
	return key
}

var durationType = reflect.TypeFor[time.Duration]()

// envKeys returns the dotted path of every key that has an environment
// override: the scalar and string-list leaves of Config, that is every key
// except those inside the upstreams list.
func envKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := tagName(f)
			if tag == "" {
				continue
			}
			key := joinKey(prefix, tag)
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != durationType:
				walk(f.Type, key)
			case f.Type.Kind() == reflect.Map,
				f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				// Lists of entries and maps cannot be written as one variable.
			default:
				keys = append(keys, key)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}

// envName is the environment variable overriding key.
func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// keyTag is the struct tag that names a field's configuration key, for
// mapstructure's decoding as for the YAML of `tether config defaults`.
const keyTag = "yaml"

// tagName is the configuration key of a struct field, "" if it has none.
func tagName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get(keyTag), ",")
	if name == "-" {
		return ""
	}
	return name
}

// fieldKeys lists the keys t defines, in declaration order.
func fieldKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if name := tagName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

// structAt returns the type of the struct at a decode path, which names
// struct fields by their keys ("lifecycle.heartbeat.client") and list
// entries by index ("upstreams[0]").
func structAt(path string) reflect.Type {
	t := reflect.TypeFor[Config]()
	for _, seg := range strings.FieldsFunc(path, func(r rune) bool { return r == '.' || r == '[' }) {
		if t.Kind() == reflect.Map {
			t = t.Elem() // seg is the entry's name
			continue
		}
		if t.Kind() == reflect.Slice {
			t = t.Elem() // seg is "0]"
			continue
		}
		for i := 0; i < t.NumField(); i++ {
			if tagName(t.Field(i)) == seg {
				t = t.Field(i).Type
				break
			}
		}
	}
	return t
}

// joinKey appends key to a dotted path, quoting a key that is empty or
// would make the path ambiguous.
func joinKey(parent, key string) string {
	if key == "" || strings.ContainsAny(key, ".[]\" \t\r\n") || !strconv.CanBackquote(key) {
		key = strconv.Quote(key)
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// collectDecodeErrors turns the (possibly joined) errors of a mapstructure
// decode into problems, one per failed key.
func collectDecodeErrors(ps *problems, err error) {
	switch e := err.(type) {
	case nil:
		return
	case *mapstructure.DecodeError:
		path := e.Name()
		var dups caseDuplicates
		switch {
		case path == reflect.TypeFor[Config]().String():
			path = "" // mapstructure names the root by its type
		case errors.As(e, &dups):
			for _, k := range dups.keys {
				if dups.names {
					ps.add(path+"["+k[1]+"]", "same name as %q (names are case-insensitive)", k[0])
				} else {
					ps.add(joinKey(path, k[1]), "same key as %q (keys are case-insensitive)", k[0])
				}
			}
			return
		}
		// ErrorUnused lists the keys it did not use, sorted and joined with
		// ", " (so a key that itself holds ", " is reported in pieces).
		if keys, ok := strings.CutPrefix(e.Unwrap().Error(), "has invalid keys: "); ok {
			valid := strings.Join(fieldKeys(structAt(path)), ", ")
			for _, k := range strings.Split(keys, ", ") {
				ps.add(joinKey(path, k), "unknown key (valid keys here: %s)", valid)
			}
			return
		}
		if path == "" {
			path = "(root)"
		}
		ps.add(path, "%s", decodeMessage(e.Unwrap()))
		return
	case interface{ Unwrap() []error }: // errors.Join of several fields
		for _, sub := range e.Unwrap() {
			collectDecodeErrors(ps, sub)
		}
		return
	case interface{ Unwrap() error }: // "decoding failed due to ...: %w"
		if inner := e.Unwrap(); inner != nil {
			collectDecodeErrors(ps, inner)
			return
		}
	}
	ps.add("(root)", "%s", err.Error())
}

// decodeMessage rewords mapstructure's type errors in the file's terms.
func decodeMessage(err error) string {
	var ute *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ute) {
		return mismatch(ute.Expected.Type(), ute.Value).Error()
	}
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return mismatch(pe.Expected.Type(), pe.Value).Error()
	}
	return err.Error()
}

// caseDuplicates is the keys of one mapping that repeat another but for
// case, as {earlier spelling, later spelling} in sorted order. mapstructure
// matches keys case-insensitively and would use one of them at random (and
// a header map would lose one when canonicalised), so decodeHook refuses
// the mapping: it keeps its default, and problems inside it show once the
// duplicate is gone.
type caseDuplicates struct {
	keys  [][2]string
	names bool // the mapping is a map (headers), not a section
}

func (c caseDuplicates) Error() string { return fmt.Sprintf("keys differ only in case: %q", c.keys) }

// decodeHook converts a YAML or environment value to the type of its field,
// strictly: it parses strings from the environment (and quoted YAML
// scalars) into numbers, booleans, durations and comma-separated lists,
// renders scalars for string fields, and rejects every other mismatch with
// a message naming the expected form.
func decodeHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	switch {
	case to == durationType:
		return toDuration(data)
	case to.Kind() == reflect.String:
		switch d := data.(type) {
		case string:
			return d, nil
		case bool, int, int64, uint64, float64:
			return fmt.Sprint(d), nil
		}
	case to.Kind() == reflect.Bool:
		switch d := data.(type) {
		case bool:
			return d, nil
		case string:
			if b, err := strconv.ParseBool(strings.TrimSpace(d)); err == nil {
				return b, nil
			}
		}
	case to.Kind() >= reflect.Int && to.Kind() <= reflect.Int64:
		return toInt(data, to)
	case to.Kind() == reflect.Float32 || to.Kind() == reflect.Float64:
		switch d := data.(type) {
		case string:
			if f, err := strconv.ParseFloat(strings.TrimSpace(d), 64); err == nil {
				return f, nil
			}
		case int, int64, uint64, float64:
			return d, nil
		}
	case to.Kind() == reflect.Slice && to.Elem().Kind() == reflect.String:
		switch d := data.(type) {
		case string:
			return splitList(d), nil
		case []any:
			return d, nil
		}
		return nil, fmt.Errorf("must be a list of strings (or one comma-separated string), got %s", describeValue(data))
	case to.Kind() == reflect.Slice:
		if _, ok := data.([]any); ok {
			return data, nil
		}
	case to == reflect.TypeFor[map[string]limits.Config]():
		// Client identities (token labels, JWT subs) are case-sensitive:
		// Alice and alice are two clients, so their overrides both stand.
		if m, ok := data.(map[string]any); ok {
			return m, nil
		}
	case to.Kind() == reflect.Struct, to.Kind() == reflect.Map:
		if m, ok := data.(map[string]any); ok {
			dups := caseDuplicates{names: to.Kind() == reflect.Map}
			seen := make(map[string]string, len(m))
			for _, k := range sortedKeys(m) {
				if prev, dup := seen[strings.ToLower(k)]; dup {
					dups.keys = append(dups.keys, [2]string{prev, k})
				} else {
					seen[strings.ToLower(k)] = k
				}
			}
			if dups.keys != nil {
				return nil, dups
			}
			return m, nil
		}
	default:
		return data, nil
	}
	return nil, mismatch(to, data)
}

// toDuration accepts Go duration strings ("30s", "1m30s") and the number 0.
// Any other bare number is rejected: its unit would be a guess.
func toDuration(data any) (any, error) {
	switch d := data.(type) {
	case string:
		v, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil {
			return nil, fmt.Errorf("must be a duration such as \"30s\" or \"1m30s\", got %s", describeValue(d))
		}
		return v, nil
	case int, int64, uint64, float64:
		if reflect.ValueOf(d).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("must be a duration with a unit, such as \"%vs\", got the bare number %v", d, d)
	}
	return nil, mismatch(durationType, data)
}

// toInt converts data to an integer that fits in to.
func toInt(data any, to reflect.Type) (any, error) {
	bits := to.Bits()
	lo, hi := -(int64(1) << (bits - 1)), int64(uint64(1)<<(bits-1)-1)
	outOfRange := func() error {
		return fmt.Errorf("must be an integer from %d to %d, got %s", lo, hi, describeValue(data))
	}
	switch d := data.(type) {
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(d), 10, bits)
		if errors.Is(err, strconv.ErrRange) {
			return nil, outOfRange()
		}
		if err == nil {
			return n, nil
		}
	case int:
		if int64(d) < lo || int64(d) > hi {
			return nil, outOfRange()
		}
		return d, nil
	case int64:
		if d < lo || d > hi {
			return nil, outOfRange()
		}
		return d, nil
	case uint64:
		if d > uint64(hi) {
			return nil, outOfRange()
		}
		return int64(d), nil
	case float64:
		if d != math.Trunc(d) || math.IsInf(d, 0) {
			break
		}
		// float64(hi) rounds up to 2^(bits-1), itself out of range.
		if d < float64(lo) || d >= float64(hi) {
			return nil, outOfRange()
		}
		return int64(d), nil
	}
	return nil, mismatch(to, data)
}

// splitList splits a comma-separated value into trimmed items; "" is the
// empty list.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return []string{}
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items
}

// mismatch is the error for a value of the wrong kind.
func mismatch(to reflect.Type, data any) error {
	return fmt.Errorf("must be %s, got %s", describeType(to), describeValue(data))
}

// describeType names a field type the way a YAML author thinks of it.
func describeType(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration such as "30s"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// describeValue names a decoded YAML value for a message, quoting strings
// (shortened) and naming composite values by kind.
func describeValue(v any) string {
	switch d := v.(type) {
	case nil:
		return "nothing"
	case string:
		const limit = 64
		if len(d) > limit {
			return strconv.Quote(d[:limit]) + "..."
		}
		return strconv.Quote(d)
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(d)
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Map:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return fmt.Sprintf("a value of type %T", v)
}
