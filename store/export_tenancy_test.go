package store

// SetMaxBans lowers the ban list's bound for a test.
func SetMaxBans(b *Bans, n int) { b.max = n }

// TenancyRebuilds counts the tenancy indexes s built from a transaction's reads.
func TenancyRebuilds(s *Store) uint64 { return s.tenancy.rebuilds.Load() }
