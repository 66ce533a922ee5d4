//go:build unix

package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// image is the service's image as the Dockerfile's final stage describes it.
type image struct {
	user    string            // USER, as uid:gid
	volumes []string          // VOLUME paths
	env     map[string]string // ENV
	chowned map[string]string // a path COPY --chown lays down -> its owner, uid:gid
}

// distroless's named users.
var imageUsers = map[string]string{"nonroot": "65532", "root": "0"}

// readImage parses the last stage of the Dockerfile: the few instructions a
// deployment depends on, in the forms this Dockerfile uses.
func readImage(t *testing.T) image {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var img image
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch args := fields[1:]; strings.ToUpper(fields[0]) {
		case "FROM": // a new stage: only the last one is the image
			img = image{env: map[string]string{}, chowned: map[string]string{}}
		case "USER":
			img.user = ids(args[0])
		case "VOLUME":
			for _, v := range args {
				img.volumes = append(img.volumes, strings.Trim(v, `[]",`))
			}
		case "ENV":
			for _, kv := range args {
				k, v, _ := strings.Cut(kv, "=")
				img.env[k] = v
			}
		case "COPY":
			for _, a := range args {
				if owner, ok := strings.CutPrefix(a, "--chown="); ok {
					img.chowned[args[len(args)-1]] = ids(owner)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return img
}

// ids turns user[:group] into uid:gid, with distroless's names.
func ids(owner string) string {
	u, g, ok := strings.Cut(owner, ":")
	if !ok {
		g = u
	}
	if n, ok := imageUsers[u]; ok {
		u = n
	}
	if n, ok := imageUsers[g]; ok {
		g = n
	}
	return u + ":" + g
}

// TestImageOwnsItsVolume: every VOLUME path exists in the image and belongs
// to the image's user. Docker creates a missing one owned by root, and seeds
// a new named volume from it, so the service, as nonroot, could not lock its
// log there and would exit at every start.
func TestImageOwnsItsVolume(t *testing.T) {
	img := readImage(t)
	if img.user == "" || img.user == "0:0" {
		t.Fatalf("USER = %q, want a user that is not root", img.user)
	}
	if len(img.volumes) == 0 {
		t.Fatal("no VOLUME for the intake log")
	}
	for _, v := range img.volumes {
		if got := img.chowned[v]; got != img.user {
			t.Errorf("VOLUME %s is laid down owned by %q, want the image's user %s (COPY --chown=… before VOLUME)", v, orRoot(got), img.user)
		}
	}
	if got := img.env["WAL_DIR"]; got != img.volumes[0] {
		t.Errorf("WAL_DIR = %q, want the volume %s", got, img.volumes[0])
	}
}

// TestImageListensOnAllInterfaces: a kubelet probe or a Service connects to
// the pod's IP, never to its localhost, so the image's address must not be
// the binary's default.
func TestImageListensOnAllInterfaces(t *testing.T) {
	addr, ok := readImage(t).env["ADDR"]
	if !ok {
		t.Fatal("the image sets no ADDR: the service would listen on localhost:9090 only")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("ADDR %q: %v", addr, err)
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("ADDR = %q, want all interfaces (:9090)", addr)
	}
}

func orRoot(owner string) string {
	if owner == "" {
		return "root (not laid down: Docker creates it)"
	}
	return owner
}

// TestImageStartsAsItsUser runs the binary as the image does: as its user,
// on a log directory owned as the image lays it down, with the image's
// environment. It must start and answer /healthz. (It needs root to switch
// user, as the image's runtime does.)
func TestImageStartsAsItsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the service as the image's user")
	}
	img := readImage(t)
	uid, gid := parseOwner(t, img.user)
	// Not t.TempDir: its parent is 0700, and the image's user must get through.
	root, err := os.MkdirTemp("", "image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "callback")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	walDir := filepath.Join(root, img.env["WAL_DIR"])
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// As Docker lays it down: owned as COPY --chown says, else by root.
	owner := img.chowned[img.env["WAL_DIR"]]
	if owner == "" {
		owner = "0:0"
	}
	ou, og := parseOwner(t, owner)
	if err := os.Chown(walDir, ou, og); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin)
	cmd.Dir = root
	cmd.Env = []string{"WAL_DIR=" + walDir, "ADDR=" + addr, "DATABASE_URL=postgres://nobody@127.0.0.1:1/none?sslmode=disable"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the deferred wait
			t.Fatalf("the service exited as uid %d on a log directory owned by %s: %v\n%s", uid, owner, err, out.String())
		case <-deadline:
			t.Fatalf("the service did not answer /healthz within 15 s\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if err := get("http://" + addr + "/healthz"); err == nil {
			return
		}
	}
}

func parseOwner(t *testing.T, owner string) (uid, gid int) {
	t.Helper()
	u, g, _ := strings.Cut(owner, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("owner %q: %v", owner, err)
	}
	return uid, gid
}

func get(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d", url, resp.StatusCode)
	}
	return nil
}
