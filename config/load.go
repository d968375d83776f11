package config

import (
	"bytes"
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
	v := viper.New()
	v.SetConfigType("yaml")
	var written map[string]any
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			// Drop viper's "While parsing config:" prefix; keep the YAML
			// error, which carries the line number.
			var pe viper.ConfigParseError
			if errors.As(err, &pe) && pe.Unwrap() != nil {
				err = pe.Unwrap()
			}
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		// viper folds keys to lower case and drops keys whose value is
		// null or an empty mapping, so keys are checked on the document as
		// written: "Serverr: {}" is still an unknown key.
		if err := yaml.Unmarshal(data, &written); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	for _, key := range envKeys() {
		if err := v.BindEnv(key, envName(key)); err != nil {
			return nil, fmt.Errorf("bind env for %s: %w", key, err)
		}
	}
	return fromSettings(written, settingsOf(v))
}

// fromSettings checks the keys of the file as written, decodes the merged
// file and environment settings on top of Default, fills upstream defaults
// and validates, collecting every problem.
func fromSettings(written, settings map[string]any) (*Config, error) {
	var keys keyCheck
	checkKeys(&keys, written, reflect.TypeFor[Config](), "")
	if keys.ambiguous {
		// viper kept one of the clashing keys at random; decoding would
		// report problems that change from run to run.
		return nil, keys.problems.err()
	}
	decodeProblems := keys.problems

	cfg := Default()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:           decodeHook,
		Result:               cfg,
		TagName:              "mapstructure",
		IgnoreUntaggedFields: true, // run-time-only fields are not configurable
	})
	if err != nil {
		return nil, fmt.Errorf("config decoder: %w", err)
	}
	collectDecodeErrors(&decodeProblems, dec.Decode(settings))

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

// settingsOf returns viper's merged settings (file, then environment on
// top) as a nested map. Unlike viper's AllSettings it is deterministic when
// keys conflict: keys are visited in sorted order, so a parent comes before
// its children, and a value is never placed under a non-mapping one.
// Keys with a nil value (YAML "key:" with nothing after it) are left out,
// so they keep their default.
func settingsOf(v *viper.Viper) map[string]any {
	keys := v.AllKeys()
	slices.Sort(keys)
	m := make(map[string]any)
	for _, k := range keys {
		val := v.Get(k)
		if val == nil {
			continue
		}
		insertPath(m, strings.Split(k, "."), val)
	}
	return m
}

// insertPath stores val at path in m, creating intermediate maps. It leaves
// m unchanged when the path is already taken or crosses a non-map value.
func insertPath(m map[string]any, path []string, val any) {
	for _, seg := range path[:len(path)-1] {
		next, exists := m[seg]
		if !exists {
			child := make(map[string]any)
			m[seg] = child
			m = child
			continue
		}
		child, ok := next.(map[string]any)
		if !ok {
			return
		}
		m = child
	}
	last := path[len(path)-1]
	if _, exists := m[last]; !exists {
		m[last] = val
	}
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

// tagName is the configuration key of a struct field, "" if it has none.
func tagName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// keyCheck collects the problems found by checkKeys.
type keyCheck struct {
	problems
	// ambiguous is set when two keys of one mapping differ only in case.
	ambiguous bool
}

// checkKeys reports every key of data that t does not define, recursing into
// nested mappings and list entries; every key that repeats another but for
// case (mapping keys are case-insensitive); and every empty entry in a list
// of mappings. Values of the wrong kind are left to decodeHook.
func checkKeys(kc *keyCheck, data any, t reflect.Type, path string) {
	if data == nil || t == durationType {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := asStringMap(data)
		if !ok {
			return
		}
		seen := make(map[string]string, len(m)) // key -> spelling used
		for _, k := range sortedKeys(m) {
			f, ok := fieldByKey(t, k)
			if !ok {
				kc.add(joinKey(path, k), "unknown key (valid keys here: %s)", strings.Join(fieldKeys(t), ", "))
				continue
			}
			key := tagName(f)
			if prev, dup := seen[key]; dup {
				kc.add(joinKey(path, k), "same key as %q (keys are case-insensitive)", prev)
				kc.ambiguous = true
				continue
			}
			seen[key] = k
			checkKeys(kc, m[k], f.Type, joinKey(path, key))
		}
	case reflect.Map:
		m, ok := asStringMap(data)
		if !ok {
			return
		}
		seen := make(map[string]string, len(m))
		for _, k := range sortedKeys(m) {
			folded := strings.ToLower(k)
			if prev, dup := seen[folded]; dup {
				kc.add(path+"["+k+"]", "same name as %q (names are case-insensitive)", prev)
				kc.ambiguous = true
				continue
			}
			seen[folded] = k
		}
	case reflect.Slice:
		list, ok := data.([]any)
		if !ok || t.Elem().Kind() != reflect.Struct {
			return
		}
		for i, e := range list {
			p := fmt.Sprintf("%s[%d]", path, i)
			if e == nil {
				kc.add(p, "empty entry; remove it or give its keys")
				continue
			}
			checkKeys(kc, e, t.Elem(), p)
		}
	}
}

// asStringMap returns a YAML mapping with its keys as strings (YAML allows
// other scalars as keys; viper renders them the same way).
func asStringMap(data any) (map[string]any, bool) {
	switch m := data.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprintf("%v", k)] = v
		}
		return out, true
	}
	return nil, false
}

// fieldByKey finds the field of t whose key matches k as mapstructure
// matches it (case-insensitively).
func fieldByKey(t reflect.Type, k string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name := tagName(f); name != "" && strings.EqualFold(name, k) {
			return f, true
		}
	}
	return reflect.StructField{}, false
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

// decodeHook converts a YAML or environment value to the type of its field,
// strictly: it parses strings from the environment (and quoted YAML
// scalars) into numbers, booleans, durations and comma-separated lists,
// renders scalars for string fields, and rejects every other mismatch with
// a message naming the expected form.
func decodeHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if data == nil {
		return nil, nil
	}
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
		case []any, []string:
			return d, nil
		}
		return nil, fmt.Errorf("must be a list of strings (or one comma-separated string), got %s", describeValue(data))
	case to.Kind() == reflect.Slice:
		if _, ok := data.([]any); ok {
			return data, nil
		}
	case to.Kind() == reflect.Struct, to.Kind() == reflect.Map:
		switch data.(type) {
		case map[string]any, map[any]any:
			return data, nil
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
	case time.Duration:
		return d, nil
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
