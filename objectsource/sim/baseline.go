package sim

import (
	"encoding/json"
	"io"
	"net/http"
)

// The baselines are what a callback handler costs at the least, to measure the service's
// intake against on the same machine in the same run: ReadOnly reads the body and answers
// 202; ReadDecode also decodes it with encoding/json, as a plain handler would. Both cap
// the body at 1 MiB like the service, and answer 202 with an empty body so that senders
// reuse their connections exactly as with the service.
var (
	ReadOnly   http.Handler = http.HandlerFunc(readOnly)
	ReadDecode http.Handler = http.HandlerFunc(readDecode)
)

const baselineMaxBody = 1 << 20

func readOnly(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, baselineMaxBody)); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func readDecode(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ObjectIDs []int64 `json:"object_ids"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, baselineMaxBody)).Decode(&body); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
