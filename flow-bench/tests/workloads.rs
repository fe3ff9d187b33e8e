//! Every workload runs at a small size, gets the right result and reports the reference
//! scripts' fields. Timing is not checked here (that is what the benchmark prints); this keeps
//! a workload from silently measuring something else.

use flow_bench::workloads::{IDS, Options, Rt, measure};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn small(id: &str) -> Result<serde_json::Map<String, Value>, Box<dyn std::error::Error + Send + Sync>> {
    let opts = Options { rt: Rt::Current, warmup: false, ..Options::default() };
    Ok(measure(id, 10, &opts)?.0)
}

#[test]
fn every_workload_runs_and_reports_the_reference_fields() -> TestResult {
    for id in IDS {
        let rec = small(id)?;
        assert_eq!(rec.get("ok"), Some(&Value::Bool(true)), "{id}: {rec:?}");
        for field in ["workload", "size", "wall_s", "steps", "per_step_us", "peak_rss_kb"] {
            assert!(rec.contains_key(field), "{id} has no `{field}`: {rec:?}");
        }
    }
    Ok(())
}

/// `w5` writes a checkpoint per step into the store; `w5-bare-sql` sends those writes to the
/// limit's table instead, so the store keeps only the run's first checkpoint.
#[test]
fn bare_sql_replaces_the_per_step_checkpoints_and_nothing_else() -> TestResult {
    let durable = small("w5")?;
    let bare = small("w5-bare-sql")?;
    // Ten steps: the first checkpoint, one per step but the last, and the final one.
    assert_eq!(durable.get("checkpoints").and_then(Value::as_u64), Some(11), "{durable:?}");
    assert_eq!(bare.get("checkpoints").and_then(Value::as_u64), Some(1), "{bare:?}");
    for rec in [&durable, &bare] {
        assert_eq!(rec.get("counter").and_then(Value::as_u64), Some(10), "{rec:?}");
        assert_eq!(rec.get("synchronous").and_then(Value::as_str), Some("FULL"), "{rec:?}");
        // The bracket is the mean of the bare commits measured before and after the run.
        let num = |k: &str| rec.get(k).and_then(Value::as_f64).ok_or_else(|| format!("no `{k}` in {rec:?}"));
        // The ratio is the run's per-step time over the bare commit measured after it.
        assert!(num("bare_commit_us")? > 0.0 && num("per_step_us")? > 0.0, "{rec:?}");
        assert!((num("ratio_to_bare_commit")? - num("per_step_us")? / num("bare_commit_us")?).abs() < 1e-6, "{rec:?}");
        let bracket = (num("bare_commit_before_us")? + num("bare_commit_us")?) / 2.0;
        assert!((num("bare_commit_bracket_us")? - bracket).abs() < 1e-6 * bracket, "{rec:?}");
        assert!((num("ratio_to_bracket")? - num("per_step_us")? / bracket).abs() < 1e-6, "{rec:?}");
    }
    Ok(())
}
