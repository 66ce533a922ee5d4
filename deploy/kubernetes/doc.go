// Package kubernetes holds no code: its tests check the manifests under
// base/ offline. They decode every document strictly into the Kubernetes
// API types (and the Prometheus Operator's), check what no schema knows
// (selectors that match, the log's directory on the claim, a grace period
// that covers the drain), and keep base/prometheusrule.yaml equal to
// deploy/prometheus/alerts.yml. It is a module of its own, so that k8s.io/api
// stays out of the service's go.mod.
package kubernetes
