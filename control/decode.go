package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/sipedge/sipedge/store"
)

// Media types a request body may have. A body without Content-Type is read as JSON.
const (
	mediaJSON = "application/json"
	mediaForm = "application/x-www-form-urlencoded"
)

// decode reads the request body into dst, a pointer to a request struct whose fields are
// pointers (absent = nil) or []string (absent = nil). JSON bodies must be one object with
// no unknown fields; form bodies are converted to that object first (lists as repeated
// keys or comma-separated). Errors: 415, 413, 400.
func (c *call) decode(dst any) error {
	media := mediaJSON
	if ct := c.r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return errorf(http.StatusUnsupportedMediaType, "Content-Type %q: %v", ct, err)
		}
		media = mt
	}
	if media != mediaJSON && media != mediaForm {
		return errorf(http.StatusUnsupportedMediaType,
			"Content-Type %q is not supported: send %s or %s", media, mediaJSON, mediaForm)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.w.ResponseWriter, c.r.Body, c.s.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return badRequest("reading request body: %v", err)
	}
	if media == mediaForm {
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return badRequest("malformed form body: %v", err)
		}
		if body, err = formToJSON(vals, dst); err != nil {
			return err
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("request body is empty: send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return badRequest("%s", describeJSONError(err, dst))
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed JSON: data after the object")
	}
	return nil
}

// describeJSONError turns an encoding/json error into a message for the client; dst is
// the struct decoded into, to tell a bad list element from a bad field.
func describeJSONError(err error, dst any) string {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at byte %d: %s", syn.Offset, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("malformed request: the body must be a JSON object, not %s", typ.Value)
		}
		if ft, ok := fieldType(dst, typ.Field); ok && ft.Kind() == reflect.Slice && ft.Elem() == typ.Type {
			return fmt.Sprintf("field %s: every element must be %s, not %s", typ.Field, jsonTypeName(typ.Type), typ.Value)
		}
		return fmt.Sprintf("field %s: must be %s, not %s", typ.Field, jsonTypeName(typ.Type), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "malformed JSON: unexpected end of body"
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field") {
		return msg
	}
	return "malformed JSON: " + msg
}

// fieldType is the type of the field of *dst whose JSON name is name.
func fieldType(dst any, name string) (reflect.Type, bool) {
	t := reflect.TypeOf(dst)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	t = t.Elem()
	for i := range t.NumField() {
		f := t.Field(i)
		if n, _, _ := strings.Cut(f.Tag.Get("json"), ","); n == name {
			return f.Type, true
		}
	}
	return nil, false
}

// jsonTypeName names a Go field type the way a JSON client thinks of it.
func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Slice:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(jsonTypeName(t.Elem()), "a "), "an ") + "s"
	}
	return t.String()
}

// formToJSON converts a form body into the JSON object dst's struct describes, so form and
// JSON requests share one decoder and one validation. Keys may end in "[]".
func formToJSON(vals url.Values, dst any) ([]byte, error) {
	t := reflect.TypeOf(dst).Elem()
	fields := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
	obj := make(map[string]any, len(vals))
	for key, vs := range vals {
		name := strings.TrimSuffix(key, "[]")
		ft, ok := fields[name]
		if !ok {
			return nil, badRequest("unknown field %q", key)
		}
		if _, dup := obj[name]; dup {
			return nil, badRequest("field %s given more than once", name)
		}
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice {
			list := []string{}
			for _, v := range vs {
				for item := range strings.SplitSeq(v, ",") {
					if item = strings.TrimSpace(item); item != "" {
						list = append(list, item)
					}
				}
			}
			obj[name] = list
			continue
		}
		if len(vs) != 1 {
			return nil, badRequest("field %s given more than once", name)
		}
		v := vs[0]
		switch ft.Kind() {
		case reflect.Bool:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, badRequest("field %s: %q is not true or false", name, v)
			}
			obj[name] = b
		case reflect.Int:
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, badRequest("field %s: %q is not an integer", name, v)
			}
			obj[name] = n
		default:
			obj[name] = v
		}
	}
	return json.Marshal(obj)
}

// Pagination bounds (Plivo: limit 1..20, default 20).
const (
	defaultLimit = 20
	maxLimit     = 20
	maxOffset    = 1_000_000_000
)

// page parses ?limit=1..20 (default 20) and ?offset>=0 (default 0). Anything else is 400.
func (c *call) page() (store.Page, error) {
	q, err := url.ParseQuery(c.r.URL.RawQuery)
	if err != nil {
		return store.Page{}, badRequest("malformed query string: %v", err)
	}
	p := store.Page{Limit: defaultLimit}
	if vs, ok := q["limit"]; ok {
		n, ok := queryInt(vs)
		if !ok || n < 1 || n > maxLimit {
			return store.Page{}, badRequest("limit %q: must be an integer from 1 to %d", strings.Join(vs, ","), maxLimit)
		}
		p.Limit = n
	}
	if vs, ok := q["offset"]; ok {
		n, ok := queryInt(vs)
		if !ok || n < 0 || n > maxOffset {
			return store.Page{}, badRequest("offset %q: must be an integer from 0 to %d", strings.Join(vs, ","), maxOffset)
		}
		p.Offset = n
	}
	return p, nil
}

// queryInt parses a single query value of plain decimal digits.
func queryInt(vs []string) (int, bool) {
	if len(vs) != 1 || vs[0] == "" || len(vs[0]) > 10 {
		return 0, false
	}
	for _, r := range vs[0] {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(vs[0])
	return n, err == nil
}

// meta is the Plivo list metadata. Previous and Next are relative URLs or null.
type meta struct {
	Limit      int     `json:"limit"`
	Offset     int     `json:"offset"`
	TotalCount int     `json:"total_count"`
	Previous   *string `json:"previous"`
	Next       *string `json:"next"`
}

// listBody is the response of every list endpoint.
type listBody[T any] struct {
	APIID   string `json:"api_id"`
	Meta    meta   `json:"meta"`
	Objects []T    `json:"objects"`
}

// list answers 200 with one page of objects. base is the list's path with trailing slash;
// next is set while objects remain after this page, previous whenever offset > 0 (it
// points limit objects back, clamped at 0, also from past the end).
func list[T any](c *call, base string, p store.Page, total int, objects []T) error {
	m := meta{Limit: p.Limit, Offset: p.Offset, TotalCount: total}
	link := func(off int) *string {
		s := base + "?limit=" + strconv.Itoa(p.Limit) + "&offset=" + strconv.Itoa(off)
		return &s
	}
	if p.Offset+p.Limit < total {
		m.Next = link(p.Offset + p.Limit)
	}
	if p.Offset > 0 {
		m.Previous = link(max(0, p.Offset-p.Limit))
	}
	if objects == nil {
		objects = []T{}
	}
	c.writeJSON(http.StatusOK, listBody[T]{APIID: c.apiID, Meta: m, Objects: objects})
	return nil
}

// window returns the page p of all (for lists the store does not page itself).
func window[T any](all []T, p store.Page) []T {
	if p.Offset >= len(all) {
		return nil
	}
	return all[p.Offset:min(len(all), p.Offset+p.Limit)]
}

// listStored answers a paginated GET of one kind: fetch reads the page window of the
// caller's account from the store, render turns each stored object into its API shape.
func listStored[T, O any](c *call, base string, fetch func(ctx context.Context, account string, p store.Page) ([]T, int, error), render func(*T) O) error {
	p, err := c.page()
	if err != nil {
		return err
	}
	stored, total, err := fetch(c.r.Context(), c.account, p)
	if err != nil {
		return err
	}
	out := make([]O, 0, len(stored))
	for i := range stored {
		out = append(out, render(&stored[i]))
	}
	return list(c, base, p, total, out)
}
