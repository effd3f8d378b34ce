// Package config loads ringvpn's configuration: a YAML file, overridden by
// environment variables, over defaults, into a typed struct. It is the only
// importer of viper; components receive typed structs, never a
// *viper.Viper.
//
// Load follows the house rules (STYLE.md, section 4):
//   - every leaf key of the destination struct is registered with its
//     default value, so that an environment variable overrides a key even
//     when the file does not mention it;
//   - the file is YAML; environment variables are PREFIX_SECTION_KEY, upper
//     case, with "." replaced by "_" (RINGVPN_TRANSPORT_BATCH_SIZE);
//   - unknown keys are errors that name the key, the file, and the nearest
//     known key;
//   - durations are written with a unit ("10s"); types that implement
//     encoding.TextUnmarshaler (netip.AddrPort, netip.Prefix,
//     security.Address, ...) are written as text;
//   - type errors name the key and where its value came from;
//   - finally the struct's own Validate method, if it has one, runs.
package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Load fills dst, a pointer to a struct pre-filled with defaults whose
// fields carry `mapstructure:"snake_case"` tags (nested structs are
// sections; `mapstructure:",squash"` merges a struct into its parent), from
// the YAML file at path (none if path is "") and from environment variables
// named envPrefix_KEY (none if envPrefix is ""). Then, if dst has a
// Validate() error method, Load returns its result.
func Load(path, envPrefix string, dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: Load needs a non-nil pointer to a struct, got %T", dst)
	}

	v := viper.NewWithOptions(viper.KeyDelimiter("."))
	leaves := map[string]reflect.Type{}
	walk("", rv.Elem(), func(key string, field reflect.Value) {
		leaves[key] = field.Type()
		v.SetDefault(key, field.Interface())
	})

	envPrefix = strings.TrimSuffix(envPrefix, "_")
	if envPrefix != "" {
		v.SetEnvPrefix(envPrefix)
		v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
		v.AutomaticEnv()
	}

	src := sources{path: path, envPrefix: envPrefix}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
		if err := unknownKeys(v.AllKeys(), leaves, path); err != nil {
			return err
		}
	}

	err := v.UnmarshalExact(dst, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		durationHook,
		textHook,
		mapstructure.StringToSliceHookFunc(","),
	)), func(c *mapstructure.DecoderConfig) {
		c.ZeroFields = true
	})
	if err != nil {
		return src.explain(err)
	}

	if val, ok := dst.(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			return fmt.Errorf("%s: %w", src.describe(), err)
		}
	}
	return nil
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	timeType            = reflect.TypeFor[time.Time]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walk calls leaf for every leaf field under v, with its dotted key.
// Structs are sections, except time.Time and types that unmarshal
// themselves from text.
func walk(prefix string, v reflect.Value, leaf func(key string, field reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if name == "-" {
			continue
		}
		fv := v.Field(i)
		if isSection(f.Type) && hasOption(opts, "squash") {
			walk(prefix, fv, leaf)
			continue
		}
		if name == "" {
			name = f.Name
		}
		key := strings.ToLower(name)
		if prefix != "" {
			key = prefix + "." + key
		}
		if isSection(f.Type) {
			walk(key, fv, leaf)
		} else {
			leaf(key, fv)
		}
	}
}

func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != timeType && !reflect.PointerTo(t).Implements(textUnmarshalerType)
}

func hasOption(opts, want string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// durationHook parses durations from text, and refuses bare numbers, which
// would otherwise silently mean nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType || from == durationType {
		return data, nil
	}
	switch from.Kind() {
	case reflect.String:
		s := data.(string)
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration; write it with a unit, like \"10s\" or \"1m30s\"", s)
		}
		return d, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return nil, fmt.Errorf("%v is not a duration; write it with a unit, like \"%vs\"", data, data)
	}
	return data, nil
}

// textHook decodes text into types that implement
// encoding.TextUnmarshaler, quoting the text in errors.
func textHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || !reflect.PointerTo(to).Implements(textUnmarshalerType) {
		return data, nil
	}
	s := reflect.ValueOf(data).String()
	ptr := reflect.New(to)
	if err := ptr.Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
		return nil, fmt.Errorf("%q is not a valid %s: %w", s, to, err)
	}
	return ptr.Elem().Interface(), nil
}

// unknownKeys reports the keys of the file that match no field.
func unknownKeys(keys []string, leaves map[string]reflect.Type, path string) error {
	var errs []error
	sort.Strings(keys)
	for _, k := range keys {
		if known(k, leaves) {
			continue
		}
		msg := fmt.Sprintf("config file %s: unknown key %q", path, k)
		if s := suggest(k, leaves); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

// known reports whether key is a leaf, lies under a leaf (a map or a list
// of structs), or is a section (a type error, if anything, reported by the
// decoder).
func known(key string, leaves map[string]reflect.Type) bool {
	if _, ok := leaves[key]; ok {
		return true
	}
	for leaf := range leaves {
		if strings.HasPrefix(key, leaf+".") || strings.HasPrefix(leaf, key+".") {
			return true
		}
	}
	return false
}

// suggest returns the known key nearest to key, if it is near enough to be
// a likely typo or a key put in the wrong section.
func suggest(key string, leaves map[string]reflect.Type) string {
	best, bestDist := "", 4
	last := key[strings.LastIndexByte(key, '.')+1:]
	for leaf := range leaves {
		d := levenshtein(key, leaf)
		leafLast := leaf[strings.LastIndexByte(leaf, '.')+1:]
		switch {
		case leafLast == last:
			d = min(d, 1) // right name, wrong section
		case levenshtein(leafLast, last) == 1:
			d = min(d, 2) // a typo in the wrong section
		case strings.HasPrefix(key, leaf+"_"), strings.HasPrefix(leaf, key+"_"):
			d = min(d, 2) // listen_port for listen
		}
		if d < bestDist || d == bestDist && leaf < best {
			best, bestDist = leaf, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sources tells where a key's value came from, for error messages.
type sources struct {
	path      string
	envPrefix string
}

func (s sources) envName(key string) string {
	if i := strings.IndexByte(key, '['); i >= 0 {
		key = key[:i]
	}
	return s.envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// of names the source of key's value.
func (s sources) of(key string) string {
	if s.envPrefix != "" {
		if name := s.envName(key); os.Getenv(name) != "" {
			return "environment variable " + name
		}
	}
	if s.path != "" {
		return "config file " + s.path
	}
	return "default"
}

// describe names all sources, for errors not tied to one key.
func (s sources) describe() string {
	switch {
	case s.path != "" && s.envPrefix != "":
		return fmt.Sprintf("config file %s (and %s_* environment variables)", s.path, s.envPrefix)
	case s.path != "":
		return "config file " + s.path
	case s.envPrefix != "":
		return fmt.Sprintf("configuration (%s_* environment variables)", s.envPrefix)
	}
	return "configuration"
}

// explain rewrites the decoder's errors as one line per key, naming the
// key and the source of its value.
func (s sources) explain(err error) error {
	var decodeErrs []*mapstructure.DecodeError
	collectDecodeErrors(err, &decodeErrs)
	if len(decodeErrs) == 0 {
		return fmt.Errorf("%s: %w", s.describe(), err)
	}
	errs := make([]error, 0, len(decodeErrs))
	for _, de := range decodeErrs {
		key := de.Name()
		errs = append(errs, fmt.Errorf("%s: %s: %w", s.of(key), key, explainCause(de.Unwrap())))
	}
	return errors.Join(errs...)
}

func collectDecodeErrors(err error, out *[]*mapstructure.DecodeError) {
	if de, ok := err.(*mapstructure.DecodeError); ok {
		*out = append(*out, de)
		return
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			collectDecodeErrors(e, out)
		}
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			collectDecodeErrors(e, out)
		}
	}
}

// explainCause words the decoder's cause plainly.
func explainCause(err error) error {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s is not a valid %s", quote(pe.Value), pe.Expected.Type())
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Errorf("%s (a %T) can't be a %s", quote(ue.Value), ue.Value, ue.Expected.Type())
	}
	return err
}

func quote(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}
