//go:build !linux

package main

import "os"

// echoOff is a no-op outside Linux: the password is read as it comes.
func echoOff(*os.File) (restore func(), ok bool) { return nil, false }
