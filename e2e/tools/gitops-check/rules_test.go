package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/promqltest"
)

// The chart's alert expressions on synthetic series, in Prometheus' own engine (the `for:`
// durations are not part of an instant evaluation).
func TestAlertExpressions(t *testing.T) {
	sources, err := ruleExprs(rules)
	if err != nil {
		t.Fatal(err)
	}
	expr := map[string]string{}
	names := []string{"MegatronFineTuneFailed", "MegatronFineTuneHangRestart", "MegatronFineTuneRestartBudgetLow", "MegatronFineTuneNoProgress"}
	if len(sources) != len(names) {
		t.Fatalf("%d exprs in %s, want %d", len(sources), rules, len(names))
	}
	for i, s := range sources {
		expr[names[i]] = strings.Join(strings.Fields(s.expr), " ")
	}

	script := fmt.Sprintf(`
load 1m
  megatron_operator_jobs{phase="Running", pod="op-0"} 2x60
  megatron_operator_jobs{phase="Failed", pod="op-0"} _x20 1x40
  megatron_operator_gang_restarts_total{reason="RankFailed", pod="op-0"} 0x10 1x50
  megatron_operator_gang_restarts_total{reason="Hung", pod="op-0"} 0x30 1x30
  megatron_trainer_attempt{namespace="ml", pod="squad-0", instance="198.18.16.1:9400"} 0x15
  megatron_trainer_attempt{namespace="ml", pod="squad-0", instance="198.18.16.2:9400"} _x15 1x15
  megatron_trainer_attempt{namespace="ml", pod="squad-0", instance="198.18.16.3:9400"} _x30 2x30
  megatron_trainer_attempt{namespace="ml", pod="other-0", instance="198.18.16.4:9400"} _x30 1x30
  megatron_trainer_last_step_timestamp_seconds{namespace="ml", pod="squad-0"} 0+60x10 600x50
  megatron_trainer_step{namespace="ml", pod="squad-0"} 0+10x10 100x50
  megatron_trainer_total_steps{namespace="ml", pod="squad-0"} 500x60
  megatron_trainer_last_step_timestamp_seconds{namespace="ml", pod="done-0"} 0+60x10 600x50
  megatron_trainer_step{namespace="ml", pod="done-0"} 0+50x10 500x50
  megatron_trainer_total_steps{namespace="ml", pod="done-0"} 500x60

# No failed job yet.
eval instant at 15m %[1]s

# One more Failed job than 10 minutes before: fires for 10 minutes.
eval instant at 25m %[1]s
  {} 1

eval instant at 35m %[1]s

# Only restarts with reason Hung count (count(): increase() extrapolates the value).
eval instant at 20m count(%[2]s)

eval instant at 40m count(%[2]s)
  {} 1

# squad-0 started attempts 1 and 2 (on new pod IPs) within 6 hours; other-0 one restart.
eval instant at 20m %[3]s

eval instant at 40m %[3]s
  {namespace="ml", pod="squad-0"} 2

# squad-0's last step was at 600s; done-0 finished its steps.
eval instant at 35m %[4]s

eval instant at 45m %[4]s
  {namespace="ml", pod="squad-0"} 2100
`, expr["MegatronFineTuneFailed"], expr["MegatronFineTuneHangRestart"], expr["MegatronFineTuneRestartBudgetLow"], expr["MegatronFineTuneNoProgress"])
	promqltest.RunTest(t, script, promqltest.NewTestEngine(t, false, 5*time.Minute, promqltest.DefaultMaxSamplesPerQuery))
}
