package wal

// recycles is false: the directory cannot be synced here, so a crash could
// undo the rename that made a spare a segment, and hide the records
// acknowledged in it under the spare's name. Segments are deleted instead.
const recycles = false

// noFollow is nothing here: os.OpenFile follows a link, and openRegular's
// check of the file it opened is what refuses anything but a regular file.
const noFollow = 0

// syncDir does nothing: Windows cannot flush a directory handle, and NTFS
// journals the creation of a file itself.
func syncDir(string) error { return nil }
