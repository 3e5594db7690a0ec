package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// echoOff turns off the echo of terminal f, so a password typed for --password-stdin is
// not shown; restore turns it back on. ok is false when f is not a terminal (a pipe, a
// file): then nothing changed.
func echoOff(f *os.File) (restore func(), ok bool) {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, false
	}
	old := *t
	t.Lflag &^= unix.ECHO
	t.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return nil, false
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, &old) }, true
}
