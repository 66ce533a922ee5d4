package objects_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"callback/pkg/objects"
)

// BenchmarkFetch is one lookup on a kept-alive connection against a local
// upstream that answers at once: the client's cost per lookup (with the
// server's, in the same process), for comparing versions side by side.
func BenchmarkFetch(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":7,"online":true}`)
	}))
	defer srv.Close()
	c := objects.New(srv.URL, 1, 5*time.Second, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Fetch(b.Context(), 7); err != nil {
			b.Fatal(err)
		}
	}
}
