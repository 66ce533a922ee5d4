package callback_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"callback/pkg/callback"
)

func TestRequireBearer(t *testing.T) {
	served := 0
	h := callback.RequireBearer("s3cret-token", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		w.WriteHeader(http.StatusAccepted)
	}))
	for _, tt := range []struct {
		header string
		want   int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer s3cret-token", http.StatusAccepted},
		{"bearer s3cret-token", http.StatusAccepted},
		{"Bearer s3cret-token ", http.StatusAccepted},
		{"Bearer s3cret-toke", http.StatusUnauthorized},
		{"Bearer s3cret-token2", http.StatusUnauthorized},
		{"Basic s3cret-token", http.StatusUnauthorized},
		{"s3cret-token", http.StatusUnauthorized},
		{"Bearer ", http.StatusUnauthorized},
	} {
		served = 0
		req := httptest.NewRequest(http.MethodPost, "/callback", strings.NewReader(`{"object_ids":[1]}`))
		if tt.header != "" {
			req.Header.Set("Authorization", tt.header)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("Authorization %q: status %d, want %d", tt.header, rec.Code, tt.want)
		}
		if tt.want != http.StatusUnauthorized {
			continue
		}
		if served != 0 {
			t.Errorf("Authorization %q: the handler ran", tt.header)
		}
		var body struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == "" || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("Authorization %q: body %q (%v), want a JSON error", tt.header, rec.Body, err)
		}
		if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("Authorization %q: WWW-Authenticate %q, want a Bearer challenge", tt.header, got)
		}
	}
}
