package wal

// noFollow is nothing here: os.OpenFile follows a link, and openRegular's
// check of the file it opened is what refuses anything but a regular file.
const noFollow = 0

// syncDir does nothing: Windows cannot flush a directory handle, and NTFS
// journals the creation of a file itself.
func syncDir(string) error { return nil }
