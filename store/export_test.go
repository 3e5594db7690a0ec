package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/sipedge/sipedge/acl"
)

// ReplaceCompile swaps the snapshot compiler for the test. Call it before Watch starts.
func ReplaceCompile(t testing.TB, f func(*acl.Dataset) (*acl.Snapshot, error)) {
	old := compile
	compile = f
	t.Cleanup(func() { compile = old })
}

// WipeObjects deletes every ACL, credential and trunk (and their id indexes) in one write
// that does NOT set the emptied marker, as data loss would, and publishes the version.
func WipeObjects(ctx context.Context, s *Store) (uint64, error) {
	type ref struct {
		Account string `json:"account"`
		ACL     string `json:"ipacl_uuid"`
		Cred    string `json:"credential_uuid"`
		Trunk   string `json:"trunk_id"`
	}
	v, _, err := s.b.update(ctx, func(t tx) error {
		var refs [][2]string
		var kinds []kind
		accs, err := t.accounts()
		if err != nil {
			return err
		}
		for _, k := range objectKinds {
			var objs [][]byte
			for _, raw := range accs {
				var a acl.Account
				if err := json.Unmarshal(raw, &a); err != nil {
					return err
				}
				more, err := t.list(k, a.AuthID)
				if err != nil {
					return err
				}
				objs = append(objs, more...)
			}
			for _, o := range objs {
				var r ref
				if err := json.Unmarshal(o, &r); err != nil {
					return err
				}
				id := map[kind]string{kindACL: r.ACL, kindCredential: r.Cred, kindTrunk: r.Trunk}[k]
				refs = append(refs, [2]string{r.Account, id})
				kinds = append(kinds, k)
			}
		}
		for i, r := range refs {
			if err := t.del(kinds[i], r[0], r[1]); err != nil {
				return err
			}
			if err := t.delIndex(string(kinds[i]), r[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return v, s.b.publish(ctx, notice{version: v})
}

// BoltRewind sets the embedded store's version to v (and a new epoch when newEpoch), as
// restoring an older copy of the file would, and publishes v.
func BoltRewind(ctx context.Context, s *Store, v uint64, newEpoch bool) error {
	b := s.b.(*boltBackend)
	err := b.db.Update(func(btx *bolt.Tx) error {
		meta := btx.Bucket(bucketMeta)
		if newEpoch {
			if err := meta.Put(keyEpoch, []byte(uuid.NewString())); err != nil {
				return err
			}
		}
		return meta.Put(keyVersion, binary.BigEndian.AppendUint64(nil, v))
	})
	if err != nil {
		return err
	}
	return s.b.publish(ctx, notice{version: v})
}

// SilentRename renames an existing credential of account without publishing the change
// (a lost change notice).
func SilentRename(ctx context.Context, s *Store, account, id, name string) (uint64, error) {
	v, _, err := s.b.update(ctx, func(t tx) error {
		c, err := getObj[acl.Credential](t, kindCredential, account, id)
		if err != nil {
			return err
		}
		c.Name = name
		raw, err := encode(c, kindCredential)
		if err != nil {
			return err
		}
		return t.put(kindCredential, account, id, raw)
	})
	return v, err
}

// Mute makes s's writes publish no change notice until unmute is called (lost notices,
// or writes by a process whose notices we want to forge). Call both while no write of s
// is in flight.
func Mute(s *Store) (unmute func()) {
	b := s.b
	s.b = mutedBackend{b}
	return func() { s.b = b }
}

type mutedBackend struct{ backend }

func (mutedBackend) publish(context.Context, notice) error { return nil }

// ParseNotice and FormatNotice expose the change-notice wire form.
func ParseNotice(s string) (version uint64, epoch, account, aclID string, err error) {
	n, err := parseNotice(s)
	return n.version, n.epoch, n.account, n.acl, err
}

func FormatNotice(version uint64, epoch, account, aclID string) string {
	return notice{version: version, epoch: epoch, account: account, acl: aclID}.String()
}
