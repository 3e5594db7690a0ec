package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/bits"

	bolt "go.etcd.io/bbolt"

	"github.com/sipedge/sipedge/acl"
)

// --- bbolt -------------------------------------------------------------------------------
//
// Bucket "hits", created by the first AddHits: key account NUL ipacl_uuid NUL entry id →
// count (8 bytes BE) and last_matched_at (8 bytes BE, Unix µs as int64; math.MinInt64 =
// never). Ids hold no control characters (checkID), so keys are unambiguous and one ACL's
// entries are one key range. The version in "meta" is not touched.

var bucketHits = []byte("hits")

// noHitTime marks an entry whose hits carried no time.
const noHitTime = math.MinInt64

func hitPrefix(account, aclUUID string) []byte { return []byte(account + "\x00" + aclUUID + "\x00") }

func encodeHit(count uint64, last int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), count), uint64(last))
}

func decodeHit(v []byte) (count uint64, last int64) {
	if len(v) != 16 {
		return 0, noHitTime
	}
	return binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:]))
}

// addHits applies a flush in one write transaction. It goes to bbolt directly, not
// through [boltBackend.update], so no version is bumped and no notice published.
func (b *boltBackend) addHits(ctx context.Context, ds []hitDelta) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(func(btx *bolt.Tx) error {
		bk, err := btx.CreateBucketIfNotExists(bucketHits)
		if err != nil {
			return err
		}
		for _, d := range ds {
			k := append(hitPrefix(d.account, d.acl), d.entry...)
			count, last := decodeHit(bk.Get(k))
			sum, carry := bits.Add64(count, uint64(d.count), 0)
			if carry != 0 {
				sum = math.MaxUint64 // saturate; unreachable in practice
			}
			if d.hasLast {
				last = max(last, d.last)
			}
			if err := bk.Put(k, encodeHit(sum, last)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (b *boltBackend) hits(ctx context.Context, account, aclUUID string) (map[string]acl.HitStat, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[string]acl.HitStat{}
	err := b.db.View(func(btx *bolt.Tx) error {
		bk := btx.Bucket(bucketHits)
		if bk == nil {
			return nil // no hit was ever added
		}
		prefix := hitPrefix(account, aclUUID)
		c := bk.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			count, last := decodeHit(v)
			st := acl.HitStat{Count: count}
			if last != noHitTime {
				st.LastMatchedAt = hitTime(last)
			}
			out[string(k[len(prefix):])] = st
		}
		return nil
	})
	return out, err
}
