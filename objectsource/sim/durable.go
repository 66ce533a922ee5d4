package sim

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
)

// Durable is the third baseline: the least any durable intake can cost on
// this disk. It reads the body and answers 202 only once the body's bytes
// are in a file and synced with fdatasync. Callbacks that arrive while a
// sync runs go in the next one (group commit), which starts as soon as the
// last returns: no linger, no framing, no index, no reclaiming. The file is
// cut back to nothing when it passes a quarter of a GiB, so a long run does
// not fill the disk; that costs one sync of metadata now and then.
type Durable struct {
	f       *os.File
	reqs    chan *durableWrite
	done    chan struct{} // closed by Close
	stopped chan struct{} // closed when commit has returned
	once    sync.Once
}

type durableWrite struct {
	body []byte
	err  chan error
}

const durableMaxFile = 256 << 20

// NewDurable opens (creating or emptying) the file at path and starts the
// goroutine that writes and syncs it; Close stops it.
func NewDurable(path string) (*Durable, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	d := &Durable{f: f, reqs: make(chan *durableWrite, 1024), done: make(chan struct{}), stopped: make(chan struct{})}
	go d.commit()
	return d, nil
}

func (d *Durable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, baselineMaxBody))
	if err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	req := &durableWrite{body: body, err: make(chan error, 1)}
	select {
	case d.reqs <- req:
	case <-d.done:
		http.Error(w, "closed", http.StatusServiceUnavailable)
		return
	}
	select {
	case err = <-req.err:
	case <-d.stopped: // Close came before the batch
		err = errors.New("closed")
	}
	if err != nil {
		http.Error(w, "not synced", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// commit owns the file: it takes whatever waits, writes it in one call,
// syncs, and answers every writer of the batch.
func (d *Durable) commit() {
	defer close(d.stopped)
	var (
		batch   []*durableWrite
		buf     []byte
		written int64
	)
	for {
		var first *durableWrite
		select {
		case first = <-d.reqs:
		case <-d.done:
			return
		}
		batch, buf = append(batch[:0], first), append(buf[:0], first.body...)
	gather:
		for {
			select {
			case req := <-d.reqs:
				batch, buf = append(batch, req), append(buf, req.body...)
			default:
				break gather
			}
		}
		_, err := d.f.Write(buf)
		if err == nil {
			err = dataSync(d.f)
		}
		if written += int64(len(buf)); err == nil && written > durableMaxFile {
			err = errors.Join(d.f.Truncate(0), seekStart(d.f))
			written = 0
		}
		for _, req := range batch {
			req.err <- err
		}
	}
}

func seekStart(f *os.File) error {
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// Close stops the writer, once its batch is done, and closes the file.
// Requests still waiting are answered 503.
func (d *Durable) Close() error {
	d.once.Do(func() { close(d.done) })
	<-d.stopped
	return d.f.Close()
}
