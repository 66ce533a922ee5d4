package kubernetes

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite base/prometheusrule.yaml from deploy/prometheus/alerts.yml")

// set is every object of the base, by kind.
type set struct {
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	secrets      []*corev1.Secret
	pdbs         []*policyv1.PodDisruptionBudget
	policies     []*networkingv1.NetworkPolicy
	monitors     []*monitoringv1.ServiceMonitor
	rules        []*monitoringv1.PrometheusRule
}

// load decodes, strictly (an unknown or duplicated field is an error), every
// document of every file that base/kustomization.yaml lists, and fails on a
// YAML file in base/ that it does not list.
func load(t *testing.T) set {
	t.Helper()
	var kust struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	b, err := os.ReadFile("base/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &kust); err != nil {
		t.Fatalf("base/kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob("base/*.yaml")
	for _, f := range files {
		if name := filepath.Base(f); name != "kustomization.yaml" && !slices.Contains(kust.Resources, name) {
			t.Errorf("base/%s is not among kustomization.yaml's resources", name)
		}
	}

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var s set
	for _, name := range kust.Resources {
		b, err := os.ReadFile(filepath.Join("base", name))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("base/%s, document %d: %v", name, i+1, err)
				continue
			}
			switch o := obj.(type) {
			case *appsv1.StatefulSet:
				s.statefulSets = append(s.statefulSets, o)
			case *corev1.Service:
				s.services = append(s.services, o)
			case *corev1.Secret:
				s.secrets = append(s.secrets, o)
			case *policyv1.PodDisruptionBudget:
				s.pdbs = append(s.pdbs, o)
			case *networkingv1.NetworkPolicy:
				s.policies = append(s.policies, o)
			case *monitoringv1.ServiceMonitor:
				s.monitors = append(s.monitors, o)
			case *monitoringv1.PrometheusRule:
				s.rules = append(s.rules, o)
			default:
				t.Errorf("base/%s, document %d: a %T, which this test does not check", name, i+1, obj)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return s
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// service is the one StatefulSet and its container.
func (s set) service(t *testing.T) (*appsv1.StatefulSet, corev1.Container) {
	t.Helper()
	if len(s.statefulSets) != 1 || len(s.statefulSets[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one StatefulSet with one container, have %d", len(s.statefulSets))
	}
	return s.statefulSets[0], s.statefulSets[0].Spec.Template.Spec.Containers[0]
}

func env(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// duration is a setting's value in the container's environment, or def
// (the service's default) when the manifest leaves it out.
func duration(t *testing.T, c corev1.Container, name string, def time.Duration) time.Duration {
	t.Helper()
	e, ok := env(c, name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(e.Value)
	if err != nil {
		t.Fatalf("%s %q: %v", name, e.Value, err)
	}
	return d
}

func selects(t *testing.T, what string, sel *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("%s: selector: %v", what, err)
		return
	}
	if s.Empty() || !s.Matches(labels.Set(podLabels)) {
		t.Errorf("%s: selector %v does not select the pods (labels %v)", what, s, podLabels)
	}
}

// TestStatefulSet: what no schema knows about the service's workload.
func TestStatefulSet(t *testing.T) {
	s := load(t)
	sts, c := s.service(t)
	pod := sts.Spec.Template
	selects(t, "StatefulSet", sts.Spec.Selector, pod.Labels)
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q, want Parallel: the replicas are independent, and an ordered rollout can wedge on a broken revision", sts.Spec.PodManagementPolicy)
	}

	// The governing Service exists and is headless.
	var headless bool
	for _, svc := range s.services {
		if svc.Name == sts.Spec.ServiceName {
			headless = svc.Spec.ClusterIP == corev1.ClusterIPNone
		}
	}
	if !headless {
		t.Errorf("serviceName %q is not a headless Service of the base", sts.Spec.ServiceName)
	}

	// The log's directory is a mount of a claim template: one volume per replica.
	walDir, ok := env(c, "WAL_DIR")
	if !ok {
		t.Fatal("no WAL_DIR: the log would go to the read-only root's ./wal")
	}
	var onClaim bool
	for _, m := range c.VolumeMounts {
		for _, claim := range sts.Spec.VolumeClaimTemplates {
			onClaim = onClaim || (m.MountPath == walDir.Value && m.Name == claim.Name)
		}
	}
	if !onClaim {
		t.Errorf("WAL_DIR %q is not the mount of a volumeClaimTemplate", walDir.Value)
	}

	// The grace period covers the preStop sleep, the shutdown delay and the
	// drain, with a margin: else the kubelet SIGKILLs a drain in progress.
	var preStop time.Duration
	if h := c.Lifecycle; h != nil && h.PreStop != nil && h.PreStop.Sleep != nil {
		preStop = time.Duration(h.PreStop.Sleep.Seconds) * time.Second
	}
	need := preStop + duration(t, c, "SHUTDOWN_DELAY", 5*time.Second) + duration(t, c, "DRAIN_TIMEOUT", 30*time.Second) + 5*time.Second
	grace := 30 * time.Second // Kubernetes' default
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace < need {
		t.Errorf("terminationGracePeriodSeconds %v < preStop + shutdown delay + drain timeout + 5s (%v)", grace, need)
	}

	// It listens where the probes and the Services connect.
	addr, _ := env(c, "ADDR")
	host, port, err := net.SplitHostPort(addr.Value)
	if err != nil || (host != "" && host != "0.0.0.0") {
		t.Errorf("ADDR %q, want all interfaces: probes and Services connect to the pod's IP", addr.Value)
	}
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
		ports[fmt.Sprint(p.ContainerPort)] = true
	}
	if !ports[port] {
		t.Errorf("ADDR %q listens on no declared containerPort", addr.Value)
	}

	// Probes: on declared ports; liveness asks only whether the process
	// answers, never readiness, which fails on purpose while draining.
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no %s probe over HTTP", name)
			continue
		}
		if !ports[p.HTTPGet.Port.String()] {
			t.Errorf("%s probe on port %q, which the container does not declare", name, p.HTTPGet.Port.String())
		}
		want := map[string]string{"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}[name]
		if p.HTTPGet.Path != want {
			t.Errorf("%s probe on %s, want %s", name, p.HTTPGet.Path, want)
		}
	}

	// Restricted, and writable only where the log is.
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot:
		t.Error("runAsNonRoot is not set")
	case psc.FSGroup == nil || psc.RunAsUser == nil || *psc.FSGroup != *psc.RunAsUser:
		t.Error("fsGroup is not the user's group: the log's volume would not be writable")
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("no RuntimeDefault seccomp profile")
	}
	switch {
	case csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem:
		t.Error("the root filesystem is writable")
	case csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	case csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL"):
		t.Error("capabilities are not all dropped")
	}

	// Memory: a request and a limit, and GOMEMLIMIT below the limit.
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if _, req := c.Resources.Requests[corev1.ResourceMemory]; !ok || !req {
		t.Error("want a memory request and limit")
	}
	if e, ok := env(c, "GOMEMLIMIT"); !ok {
		t.Error("no GOMEMLIMIT: the runtime would not know the limit")
	} else if q, err := parseGoMemLimit(e.Value); err != nil || q >= limit.Value() {
		t.Errorf("GOMEMLIMIT %q (%v), want below the limit %s", e.Value, err, limit.String())
	}

	// The database URL, password and all, comes from a Secret of the base.
	db, ok := env(c, "DATABASE_URL")
	if !ok || db.ValueFrom == nil || db.ValueFrom.SecretKeyRef == nil {
		t.Fatal("DATABASE_URL is not from a Secret")
	}
	ref := db.ValueFrom.SecretKeyRef
	var found bool
	for _, sec := range s.secrets {
		_, key := sec.StringData[ref.Key]
		found = found || (sec.Name == ref.Name && key)
	}
	if !found {
		t.Errorf("DATABASE_URL from secret %s key %s, which the base does not have", ref.Name, ref.Key)
	}
}

// parseGoMemLimit reads the runtime's GOMEMLIMIT syntax: bytes with an
// optional B, KiB, MiB, GiB or TiB.
func parseGoMemLimit(v string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = n, u.n
			break
		}
	}
	var n int64
	if _, err := fmt.Sscan(v, &n); err != nil {
		return 0, err
	}
	return n * mult, nil
}

// TestAroundTheStatefulSet: the objects that point at the pods select them,
// and name ports they declare.
func TestAroundTheStatefulSet(t *testing.T) {
	s := load(t)
	sts, c := s.service(t)
	pod := sts.Spec.Template.Labels
	declared := map[string]bool{}
	for _, p := range c.Ports {
		declared[p.Name] = true
	}

	for _, svc := range s.services {
		selects(t, "Service "+svc.Name, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, pod)
		for _, p := range svc.Spec.Ports {
			if !declared[p.TargetPort.String()] {
				t.Errorf("Service %s: targetPort %q is not a port the container declares", svc.Name, p.TargetPort.String())
			}
		}
	}

	if len(s.pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(s.pdbs))
	}
	pdb := s.pdbs[0]
	selects(t, "PodDisruptionBudget", pdb.Spec.Selector, pod)
	if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
		t.Error("PodDisruptionBudget: set exactly one of minAvailable and maxUnavailable")
	}

	if len(s.policies) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(s.policies))
	}
	np := s.policies[0]
	selects(t, "NetworkPolicy", &np.Spec.PodSelector, pod)
	var inbound bool
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			inbound = inbound || (p.Port != nil && declared[p.Port.String()])
		}
	}
	if !inbound {
		t.Error("NetworkPolicy: no ingress to the container's port: no callback would arrive")
	}

	// Prometheus scrapes each replica once, as job "callback" (the alerts'
	// up{job="callback"}): the ServiceMonitor selects exactly one Service,
	// named callback, on one of its ports.
	if len(s.monitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(s.monitors))
	}
	sm := s.monitors[0]
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var picked []*corev1.Service
	for _, svc := range s.services {
		if sel.Matches(labels.Set(svc.Labels)) {
			picked = append(picked, svc)
		}
	}
	if len(picked) != 1 || picked[0].Name != "callback" || sm.Spec.JobLabel != "" {
		t.Fatalf("the ServiceMonitor selects %d Services, want exactly the one named callback (the job label)", len(picked))
	}
	for _, ep := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(picked[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
			t.Errorf("ServiceMonitor endpoint port %q is not a port of Service callback", ep.Port)
		}
	}
}

// TestPrometheusRuleIsTheAlerts: base/prometheusrule.yaml is
// deploy/prometheus/alerts.yml wrapped for the Prometheus Operator, and every
// alert links its runbook. Run go test -update after changing the alerts.
func TestPrometheusRuleIsTheAlerts(t *testing.T) {
	b, err := os.ReadFile("../prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(b, &spec); err != nil {
		t.Fatalf("deploy/prometheus/alerts.yml: %v", err)
	}
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			if want := runbookBase + "#" + strings.ToLower(r.Alert); r.Alert != "" && r.Annotations["runbook_url"] != want {
				t.Errorf("alert %s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
		}
	}
	doc, err := yaml.Marshal(map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata":   map[string]any{"name": "callback", "labels": map[string]string{"app.kubernetes.io/name": "callback"}},
		"spec":       spec,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "# Generated from deploy/prometheus/alerts.yml by `go test -update` in\n# deploy/kubernetes: edit the alerts there, not here.\n" + string(doc)
	const path = "base/prometheusrule.yaml"
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s has drifted from deploy/prometheus/alerts.yml; run: go test -update (in deploy/kubernetes)", path)
	}
	if s := load(t); len(s.rules) != 1 || len(s.rules[0].Spec.Groups) != len(spec.Groups) {
		t.Errorf("the base holds %d PrometheusRules, want the one generated", len(s.rules))
	}
}

// runbookBase is where each alert's runbook is, a section per alert, relative to
// the repository (an overlay may prefix where it is hosted).
const runbookBase = "docs/runbooks.md"
