package callback

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// RequireBearer serves next only the requests that carry
// "Authorization: Bearer <token>"; the others get 401 with a JSON error and
// a WWW-Authenticate challenge, before their body is read. It is the guard
// for a listener that anyone can reach: without it, one 1 MiB body makes
// the service look up ~130,000 IDs.
//
// A bearer token, not an HMAC signature over the body (Standard Webhooks):
// any HTTP client can send a header, a replayed callback is harmless here
// (it only asks for lookups, and the upstream has the last word on what is
// online), and TLS in front, which the token needs anyway, already keeps
// the body from being changed on the way. The comparison is of SHA-256
// digests in constant time, so neither the token's bytes nor its length
// show in how long a wrong one takes.
func RequireBearer(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !bearer(r.Header.Get("Authorization"), want) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="callback"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer reports whether an Authorization header carries the token whose
// digest is want. The scheme is case-insensitive (RFC 9110 §11.1).
func bearer(header string, want [sha256.Size]byte) bool {
	const scheme = "bearer "
	if len(header) < len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(header[len(scheme):])))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
