package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The argocd-cm key of a health check: resource.customizations.health.<group>_<kind>.
const argocdHealthKey = "resource.customizations.health.megatron.dev_MegatronFineTune"

// argocdTests is Argo CD's health_test.yaml layout (resource_customizations/<group>/<kind>/).
type argocdTests struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus healthStatus `json:"healthStatus"`
	} `json:"tests"`
}

// healthStatus is what a health script returns, as Argo CD decodes it.
type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Argo CD replaces a status outside this set by Unknown with this message.
var validHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

const invalidHealthMessage = "Lua returned an invalid health status"

// luaMode is how Argo CD prepares the interpreter.
type luaMode struct {
	name string
	// openLibs: every standard library, as for Argo CD's built-in scripts (and its own tests)
	// or an argocd-cm script with resource.customizations.useOpenLibs.<group>_<kind>: true.
	// Without it (an argocd-cm script's default) only package, base, table and a safe os
	// subset exist: no string, math or io.
	openLibs bool
}

var luaModes = []luaMode{{"argocd-cm", false}, {"open-libs", true}}

// argocdHealth runs every case of <dir>/health_test.yaml through <dir>/health.lua in both
// interpreter setups and checks the argocd-cm patch beside the customizations, if present.
func argocdHealth(dir string, out io.Writer) error {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return err
	}
	var tests argocdTests
	if err := readYAML(filepath.Join(dir, "health_test.yaml"), &tests); err != nil {
		return err
	}
	if len(tests.Tests) == 0 {
		return fmt.Errorf("%s: no tests", filepath.Join(dir, "health_test.yaml"))
	}
	failed, total := 0, len(tests.Tests)
	for _, tc := range tests.Tests {
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		if err != nil {
			return err
		}
		var problems []string
		var got healthStatus
		for _, mode := range luaModes {
			res, err := executeHealthLua(obj, string(script), mode)
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("[%s] error: %v", mode.name, err))
			case *res != tc.HealthStatus:
				problems = append(problems, fmt.Sprintf("[%s] got %s %s", mode.name, res.Status, quote(res.Message)))
			}
			if res != nil {
				got = *res
			}
		}
		verdict := "PASS"
		if len(problems) > 0 {
			verdict = "FAIL"
			failed++
		}
		fmt.Fprintf(out, "%s  %s  %s %s\n", verdict, pad(tc.InputPath, 36), pad(got.Status, 11), quote(got.Message))
		for _, p := range problems {
			fmt.Fprintf(out, "      want %s %s; %s\n", tc.HealthStatus.Status, quote(tc.HealthStatus.Message), p)
		}
	}
	// The argocd-cm patch is generated from health.lua; a stale copy is a failure too.
	cmPath := filepath.Join(dir, "..", "..", "argocd-cm.yaml")
	if have, err := os.ReadFile(cmPath); err == nil {
		total++
		want, err := argocdConfigMap(dir)
		if err != nil {
			return err
		}
		if string(have) == want {
			fmt.Fprintf(out, "PASS  %s carries health.lua\n", filepath.Clean(cmPath))
		} else {
			fmt.Fprintf(out, "FAIL  %s differs from health.lua: regenerate it with `gitops-check argocd-cm %s`\n", filepath.Clean(cmPath), dir)
			failed++
		}
	}
	fmt.Fprintf(out, "argocd-health: %d passed, %d failed\n", total-failed, failed)
	if failed > 0 {
		return errMismatch
	}
	return nil
}

// argocdConfigMap is the argocd-cm patch carrying the script under its resource key.
func argocdConfigMap(dir string) (string, error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(`# Generated from megatron.dev/MegatronFineTune/health.lua; do not edit. Regenerate with
#   go -C e2e/tools/gitops-check run . argocd-cm "$PWD/charts/megatron-operator/gitops/argocd/megatron.dev/MegatronFineTune" \
#     > charts/megatron-operator/gitops/argocd/argocd-cm.yaml
# Merge it into Argo CD's argocd-cm ConfigMap (docs/gitops.md):
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file charts/megatron-operator/gitops/argocd/argocd-cm.yaml
data:
  ` + argocdHealthKey + `: |
`)
	for _, line := range strings.Split(strings.TrimRight(string(script), "\n"), "\n") {
		if line == "" {
			b.WriteString("\n")
		} else {
			b.WriteString("    " + line + "\n")
		}
	}
	return b.String(), nil
}

// executeHealthLua runs a health script as Argo CD's util/lua does: a fresh interpreter with
// the libraries of the mode, the object as the global `obj` (decoded as Argo CD decodes it), a
// one-second deadline, and the returned table read as {status, message}.
func executeHealthLua(obj *unstructured.Unstructured, script string, mode luaMode) (*healthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !mode.openLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening %s: %w", lib.name, err)
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj.Object))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	tbl, ok := ret.(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type().String())
	}
	js, err := json.Marshal(fromLua(tbl))
	if err != nil {
		return nil, err
	}
	var hs healthStatus
	if err := json.Unmarshal(js, &hs); err != nil {
		return nil, fmt.Errorf("the returned table %s is not {status, message}: %w", js, err)
	}
	if !validHealth[hs.Status] {
		return &healthStatus{Status: "Unknown", Message: invalidHealthMessage}, nil
	}
	return &hs, nil
}

// toLua converts a decoded object into Lua values: numbers of every width become LNumber,
// maps tables keyed by string, slices sequences, null nil.
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case int32:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case json.Number:
		return lua.LString(x)
	case string:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// fromLua converts a returned table to JSON-able values: a table with only a sequence part
// (or none at all) becomes an array, as the JSON encoder Argo CD uses does.
func fromLua(v lua.LValue) any {
	switch x := v.(type) {
	case lua.LBool:
		return bool(x)
	case lua.LNumber:
		return float64(x)
	case lua.LString:
		return string(x)
	case *lua.LTable:
		sequence := true
		x.ForEach(func(k, _ lua.LValue) {
			if _, ok := k.(lua.LNumber); !ok {
				sequence = false
			}
		})
		if sequence {
			arr := make([]any, 0, x.Len())
			for i := 1; i <= x.Len(); i++ {
				arr = append(arr, fromLua(x.RawGetInt(i)))
			}
			return arr
		}
		m := map[string]any{}
		x.ForEach(func(k, item lua.LValue) {
			m[k.String()] = fromLua(item)
		})
		return m
	}
	return nil
}

// The os functions Argo CD allows scripts: time and date. Like Argo CD, openSafeOs registers
// them into the module named by lua.TabLibName (so `table.time` exists and no global `os`),
// and `require("os")` returns a table of them.
var safeOsFuncs = map[string]lua.LGFunction{"time": osTime, "date": osDate}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.TabLibName, safeOsFuncs))
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs))
	return 1
}

// osTime: os.time() or os.time{year=, month=, day=, hour=12, min=0, sec=0}.
func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	t := l.CheckTable(1)
	field := func(name string, def int) int {
		if n, ok := t.RawGetString(name).(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	ts := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(ts.Unix()))
	return 1
}

// osDate: os.date([format [, time]]) with "!" for UTC, "*t" for a table, and the strftime
// conversions %Y %m %d %H %M %S %%; other conversions are copied through.
func osDate(l *lua.LState) int {
	t := time.Now()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
	}
	if strings.HasPrefix(format, "!") {
		t = t.UTC()
		format = format[1:]
	}
	if l.GetTop() >= 2 {
		t = time.Unix(l.CheckInt64(2), 0)
	}
	if strings.HasPrefix(format, "*t") {
		tbl := l.NewTable()
		for k, v := range map[string]int{"year": t.Year(), "month": int(t.Month()), "day": t.Day(),
			"hour": t.Hour(), "min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1} {
			tbl.RawSetString(k, lua.LNumber(v))
		}
		tbl.RawSetString("isdst", lua.LFalse)
		l.Push(tbl)
		return 1
	}
	layouts := map[byte]string{'Y': "2006", 'm': "01", 'd': "02", 'H': "15", 'M': "04", 'S': "05", 'c': "02 Jan 06 15:04 MST"}
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		if layout, ok := layouts[format[i]]; ok {
			b.WriteString(t.Format(layout))
		} else if format[i] == '%' {
			b.WriteByte('%')
		} else {
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	l.Push(lua.LString(b.String()))
	return 1
}
