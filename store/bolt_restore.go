package store

import (
	"encoding/binary"
)

// wipe empties the account, object and index buckets and clears the emptied marker.
func (t boltTx) wipe([]string) error {
	names := [][]byte{bucketAccounts, idxBucket(idxDomain), idxBucket(idxUsername)}
	for _, k := range objectKinds {
		names = append(names, []byte(k), idxBucket(string(k)))
	}
	for _, n := range names {
		if err := t.t.DeleteBucket(n); err != nil {
			return err
		}
		if _, err := t.t.CreateBucket(n); err != nil {
			return err
		}
	}
	return t.t.Bucket(bucketMeta).Delete(keyEmptied)
}

// rebase sets the version to next-1 (the commit adds 1) and the epoch.
func (t boltTx) rebase(next uint64, epoch string) error {
	meta := t.t.Bucket(bucketMeta)
	if err := meta.Put(keyVersion, binary.BigEndian.AppendUint64(nil, next-1)); err != nil {
		return err
	}
	return meta.Put(keyEpoch, []byte(epoch))
}
