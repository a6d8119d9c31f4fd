package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// fluxExprs is one entry of a Kustomization's spec.healthCheckExprs.
type fluxExprs struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Current    string `json:"current"`
	InProgress string `json:"inProgress"`
	Failed     string `json:"failed"`
}

// fluxFile is a Kustomization, or a bare healthCheckExprs list.
type fluxFile struct {
	Spec struct {
		HealthCheckExprs []fluxExprs `json:"healthCheckExprs"`
	} `json:"spec"`
	HealthCheckExprs []fluxExprs `json:"healthCheckExprs"`
}

// fluxTests: the expected outcome per object, with the expressions (flux) and with plain
// kstatus (what Flux, kpt or `kstatus` compute for this CRD without healthCheckExprs).
type fluxTests struct {
	Tests []struct {
		InputPath string `json:"inputPath"`
		Flux      string `json:"flux"`
		Kstatus   string `json:"kstatus"`
	} `json:"tests"`
}

// fluxHealth evaluates the MegatronFineTune entry of the file's healthCheckExprs on every case
// of the health_test.yaml beside it.
func fluxHealth(path string, out io.Writer) error {
	var file fluxFile
	if err := readYAML(path, &file); err != nil {
		return err
	}
	var exprs *fluxExprs
	for _, e := range append(file.Spec.HealthCheckExprs, file.HealthCheckExprs...) {
		if e.APIVersion == "megatron.dev/v1alpha1" && e.Kind == "MegatronFineTune" {
			e := e
			exprs = &e
		}
	}
	if exprs == nil {
		return fmt.Errorf("%s: no healthCheckExprs entry for megatron.dev/v1alpha1 MegatronFineTune", path)
	}
	eval, err := newFluxEvaluator(exprs)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	testsPath := filepath.Join(filepath.Dir(path), "health_test.yaml")
	var tests fluxTests
	if err := readYAML(testsPath, &tests); err != nil {
		return err
	}
	if len(tests.Tests) == 0 {
		return fmt.Errorf("%s: no tests", testsPath)
	}
	failed := 0
	for _, tc := range tests.Tests {
		obj, err := readObject(filepath.Join(filepath.Dir(testsPath), tc.InputPath))
		if err != nil {
			return err
		}
		got, evalErr := eval.evaluate(context.Background(), obj)
		detail := ""
		if evalErr != nil {
			// A failing expression makes kstatus' generic reader report Unknown with the error.
			got, detail = string(kstatus.UnknownStatus), evalErr.Error()
		}
		ks, err := kstatus.Compute(obj)
		gotKs := ""
		if err != nil {
			gotKs = "error: " + err.Error()
		} else {
			gotKs = string(ks.Status)
		}
		verdict := "PASS"
		if got != tc.Flux || (tc.Kstatus != "" && gotKs != tc.Kstatus) {
			verdict = "FAIL"
			failed++
		}
		name := filepath.Base(tc.InputPath)
		fmt.Fprintf(out, "%s  %s  flux=%s kstatus=%s", verdict, pad(name, 28), pad(got, 10), gotKs)
		if ks != nil && ks.Message != "" {
			fmt.Fprintf(out, " (%s)", ks.Message)
		}
		fmt.Fprintln(out)
		if detail != "" {
			fmt.Fprintf(out, "      expression error: %s\n", detail)
		}
		if verdict == "FAIL" {
			fmt.Fprintf(out, "      want flux=%s kstatus=%s\n", tc.Flux, tc.Kstatus)
		}
	}
	fmt.Fprintf(out, "flux-health: %d passed, %d failed\n", len(tests.Tests)-failed, failed)
	if failed > 0 {
		return errMismatch
	}
	return nil
}

// fluxEvaluator holds the parsed expressions, prepared as Flux's runtime/cel prepares them.
type fluxEvaluator struct {
	current, inProgress, failed cel.Program
}

func newFluxEvaluator(e *fluxExprs) (*fluxEvaluator, error) {
	if e.Current == "" {
		return nil, fmt.Errorf("expression current not specified")
	}
	var ev fluxEvaluator
	var err error
	if ev.current, err = fluxProgram(e.Current); err != nil {
		return nil, fmt.Errorf("current: %w", err)
	}
	if e.InProgress != "" {
		if ev.inProgress, err = fluxProgram(e.InProgress); err != nil {
			return nil, fmt.Errorf("inProgress: %w", err)
		}
	}
	if e.Failed != "" {
		if ev.failed, err = fluxProgram(e.Failed); err != nil {
			return nil, fmt.Errorf("failed: %w", err)
		}
	}
	return &ev, nil
}

// fluxProgram parses (not type-checks: the object's top-level fields are not declared) an
// expression in the environment Flux uses for healthCheckExprs.
func fluxProgram(expr string) (cel.Program, error) {
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
	if err != nil {
		return nil, err
	}
	ast, issues := env.Parse(expr)
	if issues != nil && issues.Err() != nil {
		return nil, fmt.Errorf("parsing %q: %w", expr, issues.Err())
	}
	return env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(100))
}

// evaluate follows RFC 0009: a status.observedGeneration that differs from
// metadata.generation is InProgress without evaluating anything; otherwise the first of
// inProgress, failed, current that is true decides, and none true is InProgress.
func (ev *fluxEvaluator) evaluate(ctx context.Context, u *unstructured.Unstructured) (string, error) {
	obj := u.UnstructuredContent()
	observed, ok, err := unstructured.NestedInt64(obj, "status", "observedGeneration")
	if err != nil {
		return "", err
	}
	if ok {
		generation, ok, err := unstructured.NestedInt64(obj, "metadata", "generation")
		if err != nil {
			return "", err
		}
		if ok && observed != generation {
			return string(kstatus.InProgressStatus), nil
		}
	}
	for _, step := range []struct {
		prog   cel.Program
		result kstatus.Status
	}{
		{ev.inProgress, kstatus.InProgressStatus},
		{ev.failed, kstatus.FailedStatus},
		{ev.current, kstatus.CurrentStatus},
	} {
		if step.prog == nil {
			continue
		}
		val, _, err := step.prog.ContextEval(ctx, obj)
		if err != nil {
			return "", fmt.Errorf("%s: %w", step.result, err)
		}
		b, ok := val.(types.Bool)
		if !ok {
			return "", fmt.Errorf("%s: the expression gave %v, not a bool", step.result, val)
		}
		if b {
			return string(step.result), nil
		}
	}
	return string(kstatus.InProgressStatus), nil
}
