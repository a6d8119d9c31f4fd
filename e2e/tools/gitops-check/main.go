// gitops-check runs the chart's GitOps health checks the way Argo CD and Flux run them, and
// lists the metric names the Grafana dashboard and the PrometheusRule use.
//
//	gitops-check argocd-health <dir>             every case of <dir>/health_test.yaml through <dir>/health.lua (gopher-lua)
//	gitops-check argocd-cm <dir>                 prints the argocd-cm patch that carries <dir>/health.lua
//	gitops-check flux-health <file.yaml>         the Kustomization's healthCheckExprs (cel-go) on every case of health_test.yaml beside it
//	gitops-check metric-names <dashboard.json> <rules.yaml>
//	                                             every metric name their PromQL references, one per line
//
// Exit status: 0 when every case passes, 1 on a mismatch, 2 on bad usage or unreadable input.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const usage = `usage:
  gitops-check argocd-health <dir>
  gitops-check argocd-cm <dir>
  gitops-check flux-health <file.yaml>
  gitops-check metric-names <dashboard.json> <rules.yaml>
`

// errMismatch: a case did not give what its test expects (exit status 1).
var errMismatch = errors.New("some cases did not match their expectation")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout))
}

func run(args []string, out io.Writer) int {
	var err error
	switch {
	case len(args) == 2 && args[0] == "argocd-health":
		err = argocdHealth(args[1], out)
	case len(args) == 2 && args[0] == "argocd-cm":
		var cm string
		cm, err = argocdConfigMap(args[1])
		if err == nil {
			fmt.Fprint(out, cm)
		}
	case len(args) == 2 && args[0] == "flux-health":
		err = fluxHealth(args[1], out)
	case len(args) == 3 && args[0] == "metric-names":
		var names []string
		names, err = metricNames(args[1], args[2])
		for _, n := range names {
			fmt.Fprintln(out, n)
		}
	default:
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errMismatch):
		fmt.Fprintln(os.Stderr, "gitops-check:", err)
		return 1
	default:
		fmt.Fprintln(os.Stderr, "gitops-check:", err)
		return 2
	}
}

// readObject reads one Kubernetes object from a YAML file the way the API machinery decodes
// JSON: integers become int64 and other numbers float64, as in the objects Argo CD's and
// Flux's controllers read from the API server.
func readObject(path string) (*unstructured.Unstructured, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// readYAML reads a YAML file into v (through JSON, so `json` tags apply).
func readYAML(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// quote renders a message for the report, JSON-escaped so empty strings stay visible.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// pad left-aligns s in a column of width n.
func pad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return s + strings.Repeat(" ", n-len(s))
}
