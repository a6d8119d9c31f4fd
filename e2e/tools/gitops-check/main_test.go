package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const (
	argocdDir     = "../../../charts/megatron-operator/gitops/argocd/megatron.dev/MegatronFineTune"
	fluxExprsFile = "../../../charts/megatron-operator/gitops/flux/healthcheckexprs.yaml"
	dashboard     = "../../../charts/megatron-operator/dashboards/megatron-finetune.json"
	rules         = "../../../charts/megatron-operator/templates/prometheusrule.yaml"
)

func TestChartHealthChecksPass(t *testing.T) {
	for name, check := range map[string]func(out *bytes.Buffer) error{
		"argocd-health": func(out *bytes.Buffer) error { return argocdHealth(argocdDir, out) },
		"flux-health":   func(out *bytes.Buffer) error { return fluxHealth(fluxExprsFile, out) },
	} {
		var out bytes.Buffer
		if err := check(&out); err != nil {
			t.Errorf("%s: %v\n%s", name, err, out.String())
		}
	}
}

// copyTree copies the gitops folder so a test can change an expectation.
func copyTree(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	err := filepath.Walk(from, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return to
}

func replaceIn(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWrongExpectationsFail(t *testing.T) {
	tree := copyTree(t, "../../../charts/megatron-operator/gitops")
	dir := filepath.Join(tree, "argocd/megatron.dev/MegatronFineTune")
	replaceIn(t, filepath.Join(dir, "health_test.yaml"), "status: Degraded", "status: Healthy")
	var out bytes.Buffer
	if err := argocdHealth(dir, &out); !errors.Is(err, errMismatch) {
		t.Errorf("a wrong Argo CD expectation passed: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "FAIL  testdata/failed.yaml") {
		t.Errorf("no FAIL line for failed.yaml:\n%s", out.String())
	}

	flux := filepath.Join(tree, "flux")
	replaceIn(t, filepath.Join(flux, "health_test.yaml"), "flux: Failed", "flux: Current")
	out.Reset()
	if err := fluxHealth(filepath.Join(flux, "healthcheckexprs.yaml"), &out); !errors.Is(err, errMismatch) {
		t.Errorf("a wrong Flux expectation passed: %v\n%s", err, out.String())
	}
}

func TestStaleArgoConfigMapFails(t *testing.T) {
	tree := copyTree(t, "../../../charts/megatron-operator/gitops")
	dir := filepath.Join(tree, "argocd/megatron.dev/MegatronFineTune")
	replaceIn(t, filepath.Join(dir, "health.lua"), `hs.message = "Failed"`, `hs.message = "failed"`)
	var out bytes.Buffer
	if err := argocdHealth(dir, &out); !errors.Is(err, errMismatch) || !strings.Contains(out.String(), "differs from health.lua") {
		t.Errorf("a stale argocd-cm.yaml passed: %v\n%s", err, out.String())
	}
}

// An argocd-cm script runs without the string library unless useOpenLibs is set.
func TestArgoConfigMapScriptsHaveNoStringLibrary(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"generation": int64(2)}}}
	script := `return {status = "Healthy", message = string.format("generation %d", obj.metadata.generation)}`
	if _, err := executeHealthLua(obj, script, luaMode{"argocd-cm", false}); err == nil {
		t.Error("string.format worked without open libraries")
	}
	got, err := executeHealthLua(obj, script, luaMode{"open-libs", true})
	if err != nil || *got != (healthStatus{"Healthy", "generation 2"}) {
		t.Errorf("open libraries: %v %v", got, err)
	}
	got, err = executeHealthLua(obj, `return {status = "Fine"}`, luaMode{"argocd-cm", false})
	if err != nil || *got != (healthStatus{"Unknown", invalidHealthMessage}) {
		t.Errorf("an invalid status: %v %v", got, err)
	}
	if _, err := executeHealthLua(obj, `return "Healthy"`, luaMode{"argocd-cm", false}); err == nil {
		t.Error("a string return passed")
	}
	if _, err := executeHealthLua(obj, `while true do end`, luaMode{"argocd-cm", false}); err == nil {
		t.Error("an endless script was not stopped")
	}
	got, err = executeHealthLua(obj, `local os = require("os"); return {status = "Healthy", message = tostring(os.time() > 0)}`, luaMode{"argocd-cm", false})
	if err != nil || got.Message != "true" {
		t.Errorf("require(\"os\").time: %v %v", got, err)
	}
}

func TestMetricNames(t *testing.T) {
	names, err := metricNames(dashboard, rules)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"megatron_operator_jobs", "megatron_operator_gang_restarts_total",
		"megatron_operator_reconcile_duration_seconds_bucket", "megatron_trainer_step",
		"megatron_trainer_last_step_timestamp_seconds", "megatron_trainer_attempt"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("%s missing from %v", want, names)
		}
	}

	dir := t.TempDir()
	dash := filepath.Join(dir, "d.json")
	os.WriteFile(dash, []byte(`{"panels":[{"title":"p","targets":[{"expr":"rate(a_total{x=~\"$x\"}[$__rate_interval]) / on() group_left b"}]}],
		"templating":{"list":[{"type":"query","name":"x","query":{"query":"label_values(c{y=\"1\"}, x)"}}]}}`), 0o644)
	rulesFile := filepath.Join(dir, "r.yaml")
	os.WriteFile(rulesFile, []byte(`{{- if .Values.on }}
groups:
  - rules:
      - alert: A
        expr: |
          sum(d) by (x)
            > e offset 5m
        annotations:
          description: {{`+"`{{ $value }}`"+`}}
      - expr: "{__name__=\"f\"} > 1"
        record: g
      - expr: h
{{- end }}
`), 0o644)
	names, err = metricNames(dash, rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a_total", "b", "c", "d", "e", "f", "h"}; !reflect.DeepEqual(names, want) {
		t.Errorf("got %v, want %v", names, want)
	}
	os.WriteFile(rulesFile, []byte("groups:\n  - rules:\n      - expr: up > {{ .Values.x }}\n"), 0o644)
	if _, err := metricNames(dash, rulesFile); err == nil {
		t.Error("an expr with a template action passed")
	}
}
