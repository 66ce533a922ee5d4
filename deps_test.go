package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPgxStaysInStore keeps the database driver behind pkg/store: only main
// (the wiring), pkg/store and the test helper pkg/pgtest may depend on pgx,
// directly or through another package. The rest declare what they need and
// are tested without a database driver in their build.
func TestPgxStaysInStore(t *testing.T) {
	allowed := map[string]bool{"callback": true, "callback/pkg/store": true, "callback/pkg/pgtest": true}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		pkg, deps, _ := strings.Cut(strings.TrimSpace(line), " ")
		checked++
		for dep := range strings.FieldsSeq(deps) {
			if strings.HasPrefix(dep, "github.com/jackc/pgx") && !allowed[pkg] {
				t.Errorf("%s depends on %s, want pgx only under %v", pkg, dep, allowed)
				break
			}
		}
	}
	if checked < 8 {
		t.Fatalf("go list named %d packages, want every package of the module:\n%s", checked, out)
	}
}
