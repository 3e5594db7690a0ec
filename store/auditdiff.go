package store

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// MaxAuditObjectBytes bounds the JSON of each of an audit entry's before and after. An
// object beyond it keeps its first entries and says how many it left out
// ("entries_omitted"), or is replaced by {"truncated": true, "bytes": N}.
const MaxAuditObjectBytes = 8 << 10

// auditPair is the before and after of an audit entry. A create or delete records the
// object (without secrets); an update records what changed: the fields whose values
// differ, and for an ACL's entries (matched by id) the entries removed or changed (their
// old form, in before) and added or changed (their new form, in after), never the whole
// list twice. Both are bounded by [MaxAuditObjectBytes].
func auditPair(kind string, before, after any) (b, a json.RawMessage, err error) {
	bm, err := auditMap(kind, before)
	if err != nil {
		return nil, nil, err
	}
	am, err := auditMap(kind, after)
	if err != nil {
		return nil, nil, err
	}
	if bm != nil && am != nil {
		if err := diffMaps(bm, am); err != nil {
			return nil, nil, fmt.Errorf("store: audit diff %s: %w", kind, err)
		}
	}
	if b, err = bounded(bm); err != nil {
		return nil, nil, err
	}
	a, err = bounded(am)
	return b, a, err
}

// auditMap is obj's stored JSON as fields, secrets left out; nil for no object.
func auditMap(kind string, obj any) (map[string]json.RawMessage, error) {
	raw, err := auditJSON(kind, obj)
	if err != nil || raw == nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("store: encode audit %s: %w", kind, err)
	}
	return m, nil
}

// diffMaps keeps in b and a only the fields that differ; "entries" lists are reduced to
// the entries that differ.
func diffMaps(b, a map[string]json.RawMessage) error {
	keys := map[string]bool{}
	for k := range b {
		keys[k] = true
	}
	for k := range a {
		keys[k] = true
	}
	for k := range keys {
		bv, inB := b[k]
		av, inA := a[k]
		if inB && inA && bytes.Equal(bv, av) {
			delete(b, k)
			delete(a, k)
			continue
		}
		if k != "entries" || !inB || !inA {
			continue
		}
		removed, added, err := diffEntries(bv, av)
		if err != nil {
			return err
		}
		delete(b, k)
		delete(a, k)
		if removed != nil {
			b[k] = removed
		}
		if added != nil {
			a[k] = added
		}
	}
	return nil
}

// diffEntries returns the entries of before that after lacks or changed, and the entries
// of after that before lacks or changed (nil when none), matched by "id".
func diffEntries(before, after json.RawMessage) (removed, added json.RawMessage, err error) {
	var bl, al []json.RawMessage
	if err := json.Unmarshal(before, &bl); err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(after, &al); err != nil {
		return nil, nil, err
	}
	id := func(e json.RawMessage) string {
		var v struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(e, &v)
		return v.ID
	}
	old := make(map[string]json.RawMessage, len(bl))
	for _, e := range bl {
		old[id(e)] = e
	}
	seen := make(map[string]bool, len(al))
	var rm, ad []json.RawMessage
	for _, e := range al {
		k := id(e)
		seen[k] = true
		if o, ok := old[k]; !ok || !bytes.Equal(o, e) {
			ad = append(ad, e)
			if ok {
				rm = append(rm, o)
			}
		}
	}
	for _, e := range bl {
		if !seen[id(e)] {
			rm = append(rm, e)
		}
	}
	if rm != nil {
		if removed, err = json.Marshal(rm); err != nil {
			return nil, nil, err
		}
	}
	if ad != nil {
		if added, err = json.Marshal(ad); err != nil {
			return nil, nil, err
		}
	}
	return removed, added, nil
}

// bounded encodes m within MaxAuditObjectBytes (see there); nil for nil.
func bounded(m map[string]json.RawMessage) (json.RawMessage, error) {
	if m == nil {
		return nil, nil
	}
	raw, err := json.Marshal(m)
	if err != nil || len(raw) <= MaxAuditObjectBytes {
		return raw, err
	}
	if ev, ok := m["entries"]; ok {
		var list []json.RawMessage
		if json.Unmarshal(ev, &list) == nil {
			rest := make(map[string]json.RawMessage, len(m)+1)
			for k, v := range m {
				rest[k] = v
			}
			// Keep the most entries that fit, found by halving.
			lo, hi := 0, len(list)
			for lo < hi {
				mid := (lo + hi + 1) / 2
				if fits(rest, list, mid) {
					lo = mid
				} else {
					hi = mid - 1
				}
			}
			if fits(rest, list, lo) {
				return withEntries(rest, list, lo)
			}
		}
	}
	return json.Marshal(map[string]any{"truncated": true, "bytes": len(raw)})
}

func withEntries(m map[string]json.RawMessage, list []json.RawMessage, n int) (json.RawMessage, error) {
	kept, err := json.Marshal(list[:n])
	if err != nil {
		return nil, err
	}
	m["entries"] = kept
	m["entries_omitted"] = json.RawMessage(fmt.Sprint(len(list) - n))
	return json.Marshal(m)
}

func fits(m map[string]json.RawMessage, list []json.RawMessage, n int) bool {
	raw, err := withEntries(m, list, n)
	return err == nil && len(raw) <= MaxAuditObjectBytes
}
