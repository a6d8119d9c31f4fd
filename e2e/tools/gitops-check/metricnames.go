package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// metricNames lists, sorted and once each, the metric names referenced by the PromQL of a
// Grafana dashboard (every target's `expr` and every query variable's `query`) and of a rules
// file (every `expr`). The rules file may be a plain rule file, rendered manifests, or the
// chart's Helm template: `expr` values are read line by line, so template actions elsewhere
// do not matter (an `expr` that holds one is an error).
func metricNames(dashboardPath, rulesPath string) ([]string, error) {
	var exprs []source
	d, err := dashboardExprs(dashboardPath)
	if err != nil {
		return nil, err
	}
	exprs = append(exprs, d...)
	r, err := ruleExprs(rulesPath)
	if err != nil {
		return nil, err
	}
	if len(r) == 0 {
		return nil, fmt.Errorf("%s: no expr found", rulesPath)
	}
	exprs = append(exprs, r...)

	seen := map[string]bool{}
	for _, e := range exprs {
		names, err := promqlMetricNames(e.expr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.where, err)
		}
		for _, n := range names {
			seen[n] = true
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// source is one PromQL expression and where it came from.
type source struct {
	where, expr string
}

// dashboardExprs walks the dashboard JSON for targets' `expr` and query variables.
func dashboardExprs(path string) ([]source, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []source
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch x := v.(type) {
		case map[string]any:
			here := where
			if t, ok := x["title"].(string); ok {
				here = where + "/" + t
			}
			if e, ok := x["expr"].(string); ok && e != "" {
				out = append(out, source{path + ": " + here, e})
			}
			// Templating query variables: label_values(<selector>, <label>) or plain PromQL.
			if x["type"] == "query" {
				q, _ := x["query"].(string)
				if m, ok := x["query"].(map[string]any); ok {
					q, _ = m["query"].(string)
				}
				if q != "" {
					name, _ := x["name"].(string)
					out = append(out, source{path + ": variable " + name, grafanaVariableQuery(q)})
				}
			}
			for k, item := range x {
				if k == "expr" || k == "query" {
					continue
				}
				walk(item, here)
			}
		case []any:
			for _, item := range x {
				walk(item, where)
			}
		}
	}
	walk(doc, "")
	sort.Slice(out, func(i, j int) bool { return out[i].where < out[j].where })
	return out, nil
}

var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*(,\s*[A-Za-z_][A-Za-z0-9_]*\s*)?\)\s*$`)

// grafanaVariableQuery turns a Prometheus data source variable query into PromQL:
// label_values(sel, label) -> sel; query_result(q) -> q.
func grafanaVariableQuery(q string) string {
	if m := labelValues.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	if strings.HasPrefix(strings.TrimSpace(q), "query_result(") {
		q = strings.TrimSpace(q)
		return q[len("query_result(") : len(q)-1]
	}
	return q
}

var exprLine = regexp.MustCompile(`^(\s*)(?:-\s+)?expr:\s*(.*)$`)

// ruleExprs reads every `expr:` value of a YAML file without parsing the rest of it, so a
// Helm template works as well as rendered YAML.
func ruleExprs(path string) ([]source, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(raw), "\n")
	var out []source
	for i := 0; i < len(lines); i++ {
		m := exprLine.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		where := fmt.Sprintf("%s:%d", path, i+1)
		indent, value := len(m[1]), strings.TrimSpace(m[2])
		var expr string
		if strings.HasPrefix(value, "|") || strings.HasPrefix(value, ">") {
			// A block scalar: the following lines indented deeper than the key.
			var block []string
			for i+1 < len(lines) {
				next := lines[i+1]
				if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
					break
				}
				block = append(block, next)
				i++
			}
			doc := "x: " + value + "\n" + strings.Join(block, "\n") + "\n"
			var v struct{ X string }
			if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			expr = v.X
		} else {
			var v struct{ X string }
			if err := yaml.Unmarshal([]byte("x: "+value), &v); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			expr = v.X
		}
		if strings.Contains(expr, "{{") {
			return nil, fmt.Errorf("%s: expr holds a template action: %q", where, expr)
		}
		out = append(out, source{where, expr})
	}
	return out, nil
}

var grafanaMacro = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)

// promqlMetricNames parses an expression and returns the metric names of its selectors.
// Grafana's interval macros stand in as 5m; other variables may appear only inside label
// matcher strings.
func promqlMetricNames(expr string) ([]string, error) {
	expr = grafanaMacro.ReplaceAllString(expr, "5m")
	parsed, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", expr, err)
	}
	var names []string
	var problem error
	parser.Inspect(parsed, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if vs.Name != "" {
			names = append(names, vs.Name)
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type != labels.MatchEqual {
					problem = fmt.Errorf("%q: a __name__ matcher other than = names no single metric", expr)
				}
				names = append(names, m.Value)
			}
		}
		return nil
	})
	return names, problem
}
