package store

// SetMaxBans lowers the ban list's bound for a test.
func SetMaxBans(b *Bans, n int) { b.max = n }
