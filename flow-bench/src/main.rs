//! `flow-bench`: runs the benchmark workloads and prints one JSON line per measurement.
//!
//! ```text
//! flow-bench <workload> [size] [--reps N] [--rt multi|current] [--no-warmup]
//! flow-bench startup [--reps N] [--rt multi|current]
//! flow-bench all [--reps N] [--rt multi|current] [--quick]
//! flow-bench list
//! flow-bench memory-recall [memories] [--store sqlite|pg|pgvector]
//! ```
//!
//! Workloads: w1, w2, w3, w3s, w4, w5 (the engine; w1-spawned: W1 run inside a spawned task
//! instead of the future `block_on` polls; w1-stream and w1-stream-outcome: W1 started with
//! `Runner::stream` on every channel and on none) and w1-limit, w1-limit-loop, w1-limit-spawn, w2-limit,
//! w3-limit, w3s-limit, w5-limit (hand-written, no engine; w1-limit-loop awaits one function N
//! times where w1-limit awaits N distinct ones), w4-inflight (memory per run with
//! every run in flight), w5-normal (W5 and its bare commit with `synchronous=NORMAL`: the cost
//! without the fsync), w5-bare-sql (W5 with each checkpoint replaced by the limit's bare insert:
//! the engine's work between fsyncs without our store's SQL), w5-concurrent (durable runs in flight sharing commits).
//!
//! On PostgreSQL (`DATABASE_URL`, else 127.0.0.1:5432; see [`flow_bench::pg`]): w5-pg and
//! w5-pg-limit (W5 and its bare insert-and-commit), `w6 [in_flight] --workers N [--secs S]` and
//! w6-limit (durable steps per second with N worker processes, and the bare commit throughput at
//! the same concurrency), `takeover [lease_ms]` (time to take a run over after its worker was
//! killed).
//!
//! Every measurement runs in a fresh process (this binary, spawned with `--once`): a warm-up at
//! size 3, then the timed run. With `--reps N` (default 5) each measurement runs N times and a
//! last line with `"stat": "median"` gives the medians.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use flow_bench::flows::{Chain10, Counter};
use flow_bench::measure::{Record, cur_rss_kb, median_record, peak_rss_kb, proc_status};
use flow_bench::workloads::{self, BoxError, IDS, Options, PG_IDS, Rt, default_size};
use flow_core::Runner;

/// The matrix of `all`: the anchors' MAIN sizes, then our limits and extra variants.
const MATRIX: &[(&str, usize)] = &[
    ("w1", 100),
    ("w1", 1000),
    ("w2", 1000),
    ("w2", 10000),
    ("w3", 10),
    ("w3", 100),
    ("w3s", 10),
    ("w3s", 100),
    ("w4", 100),
    ("w4", 1000),
    ("w5", 100),
    ("w1-limit", 100),
    ("w1-limit", 1000),
    ("w1-limit-loop", 100),
    ("w1-limit-loop", 1000),
    ("w1-limit-spawn", 100),
    ("w1-limit-spawn", 1000),
    ("w1-spawned", 100),
    ("w1-spawned", 1000),
    ("w2-limit", 1000),
    ("w2-limit", 10000),
    ("w3-limit", 10),
    ("w3-limit", 100),
    ("w3s-limit", 10),
    ("w3s-limit", 100),
    ("w4", 10000),
    ("w4-inflight", 10000),
    ("w5-limit", 100),
    ("w5-normal", 100),
    ("w5-bare-sql", 100),
    ("w5-concurrent", 1000),
    ("startup", 10),
];

const USAGE: &str = "usage: flow-bench <workload> [size] [--reps N] [--rt multi|current] [--no-warmup]
       flow-bench startup [--reps N] [--rt multi|current]
       flow-bench all [--reps N] [--rt multi|current] [--quick]
       flow-bench w6|w6-limit [in_flight] --workers N [--secs S] [--reps N]
       flow-bench memory-recall [memories] [--store sqlite|pg|pgvector]
       flow-bench list | sizes";

#[derive(Debug)]
struct Args {
    command: String,
    size: Option<usize>,
    reps: usize,
    rt: Rt,
    warmup: bool,
    once: bool,
    quick: bool,
    workers: usize,
    secs: f64,
    store: String,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        command: String::new(),
        size: None,
        reps: 5,
        rt: Rt::Multi,
        warmup: true,
        once: false,
        quick: false,
        workers: 1,
        secs: 5.0,
        store: "sqlite".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => {
                let v = it.next().ok_or("--reps needs a number")?;
                args.reps = v.parse().map_err(|e| format!("--reps {v}: {e}"))?;
            }
            "--rt" => {
                let v = it.next().ok_or("--rt needs multi or current")?;
                args.rt = Rt::parse(&v).ok_or_else(|| format!("--rt {v}: use multi or current"))?;
            }
            "--workers" => {
                let v = it.next().ok_or("--workers needs a number")?;
                args.workers = v.parse().map_err(|e| format!("--workers {v}: {e}"))?;
            }
            "--secs" => {
                let v = it.next().ok_or("--secs needs a number")?;
                args.secs = v.parse().map_err(|e| format!("--secs {v}: {e}"))?;
            }
            "--store" => args.store = it.next().ok_or("--store needs sqlite, pg or pgvector")?,
            "--no-warmup" => args.warmup = false,
            "--once" => args.once = true,
            "--quick" => args.quick = true,
            "-h" | "--help" => args.command = "help".into(),
            _ if args.command.is_empty() => args.command = a,
            _ if args.size.is_none() => args.size = Some(a.parse().map_err(|e| format!("size `{a}`: {e}"))?),
            _ => return Err(format!("unexpected argument `{a}`\n{USAGE}").into()),
        }
    }
    if args.command.is_empty() {
        return Err(USAGE.into());
    }
    Ok(args)
}

/// Prints one line on stdout, flushed at once (a parent process reads it).
#[allow(clippy::print_stdout)]
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flow-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), BoxError> {
    let t_main = Instant::now();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("pg-worker") {
        return flow_bench::pg::worker_main(&argv[1..]);
    }
    let args = parse_args()?;
    let opts =
        Options { rt: args.rt, warmup: args.warmup, workers: args.workers, secs: args.secs, ..Options::default() };
    match args.command.as_str() {
        "help" => {
            eprintln!("{USAGE}\nworkloads: {}, startup", IDS.join(", "));
            Ok(())
        }
        "list" => {
            for id in IDS.iter().chain(PG_IDS) {
                emit(&format!("{id} (default size {})", default_size(id)));
            }
            emit("startup");
            Ok(())
        }
        "startup-child" => startup_child(args.rt, t_main),
        "sizes" => {
            emit(&sizes().to_line());
            Ok(())
        }
        "startup" => {
            let recs = repeat(args.reps, || startup(args.rt))?;
            summarize(&recs);
            Ok(())
        }
        "all" => all(&args),
        "memory-recall" => {
            let n = args.size.unwrap_or(10_000);
            let on = flow_bench::memory::RecallStore::parse(&args.store)
                .ok_or_else(|| format!("--store {}: use sqlite, pg or pgvector", args.store))?;
            emit(&flow_bench::memory::measure(n, &opts.tmp, on)?.to_string());
            Ok(())
        }
        id => {
            if !IDS.contains(&id) && !PG_IDS.contains(&id) {
                return Err(format!("unknown workload `{id}`; known: {}, startup\n{USAGE}", IDS.join(", ")).into());
            }
            let size = args.size.unwrap_or_else(|| default_size(id));
            if args.once {
                let rec = workloads::measure(id, size, &opts)?;
                emit(&rec.to_line());
                return Ok(());
            }
            let recs = repeat(args.reps, || spawn_once(id, size, &args))?;
            summarize(&recs);
            if recs.iter().any(|r| r.get("error").is_some()) {
                return Err(format!("`{id} {size}` failed (see above)").into());
            }
            Ok(())
        }
    }
}

fn repeat(reps: usize, mut f: impl FnMut() -> Result<Record, BoxError>) -> Result<Vec<Record>, BoxError> {
    let mut recs = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let rec = f()?;
        emit(&rec.to_line());
        recs.push(rec);
    }
    Ok(recs)
}

fn summarize(recs: &[Record]) {
    if recs.len() > 1
        && let Some(m) = median_record(recs)
    {
        emit(&m.to_line());
    }
}

/// Runs one measurement in a fresh process of this binary and returns its record.
fn spawn_once(id: &str, size: usize, args: &Args) -> Result<Record, BoxError> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args([id, &size.to_string(), "--once", "--rt", args.rt.name()]);
    cmd.args(["--workers", &args.workers.to_string(), "--secs", &args.secs.to_string()]);
    if !args.warmup {
        cmd.arg("--no-warmup");
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().rev().find_map(Record::from_line) {
        Some(rec) if out.status.success() => Ok(rec),
        _ => {
            let (workload, variant) = workloads::split(id);
            let mut rec = Record::new(workload, variant, size);
            rec.set("ok", false);
            rec.set("error", format!("child exited with {}", out.status));
            Ok(rec)
        }
    }
}

/// The startup measurement: spawns `startup-child` and times it from just before the spawn to
/// the moment its first (and only) result line arrives.
fn startup(rt: Rt) -> Result<Record, BoxError> {
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .args(["startup-child", "--rt", rt.name()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("the child's stdout is not piped")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let to_result = t0.elapsed();
    let status = child.wait()?;
    let proc_wall = t0.elapsed();
    let mut rec = Record::from_line(&line).unwrap_or_else(|| {
        let mut r = Record::new("startup", "engine", 10);
        r.set("ok", false);
        r.set("error", format!("no result from the child ({status})"));
        r
    });
    rec.timing(to_result.as_secs_f64(), 10);
    rec.set_f("proc_wall_s", proc_wall.as_secs_f64());
    Ok(rec)
}

/// The child of [`startup`]: builds a runtime, runs W1 with N = 10 in memory, prints the result
/// with this process's peak RSS, and exits.
fn startup_child(rt: Rt, t_main: Instant) -> Result<(), BoxError> {
    let runtime = rt.build()?;
    let out = runtime.block_on(async { Runner::new(Chain10).kickoff(Counter::default()).await?.completed() })?;
    let in_process = t_main.elapsed();
    let mut rec = Record::new("startup", "engine", 10);
    rec.set("rt", rt.name());
    rec.set("ok", out.state.counter == 10);
    rec.set("counter", out.state.counter);
    rec.set_f("in_process_s", in_process.as_secs_f64());
    rec.set("peak_rss_kb", peak_rss_kb());
    rec.set("cur_rss_kb", cur_rss_kb());
    rec.set("os_threads_end", proc_status("Threads"));
    emit(&rec.to_line());
    Ok(())
}

/// Sizes of the futures the engine moves around: a large future is copied (memcpy) into a task
/// cell on every spawn.
fn sizes() -> Record {
    use flow_bench::flows::{Chain3, Chain1000, Fan100, Loop};
    fn kickoff_bytes<F: flow_core::Flow<State = Counter>>(flow: F) -> usize {
        let runner = Runner::new(flow);
        std::mem::size_of_val(&runner.kickoff(Counter::default()))
    }
    let mut rec = Record::new("sizes", "engine", 0);
    rec.set("kickoff_future_bytes_chain3", kickoff_bytes(Chain3));
    rec.set("kickoff_future_bytes_chain1000", kickoff_bytes(Chain1000));
    rec.set("kickoff_future_bytes_loop", kickoff_bytes(Loop { k: 1 }));
    rec.set("kickoff_future_bytes_fan100", kickoff_bytes(Fan100));
    rec.set("runner_bytes", std::mem::size_of::<Runner<Chain3>>());
    rec
}

/// The whole matrix, round-robin over repetitions (slow drifts in machine load hit every
/// measurement alike), one process per measurement; the medians last.
fn all(args: &Args) -> Result<(), BoxError> {
    let reps = if args.quick { 1 } else { args.reps.max(1) };
    let mut by: Vec<Vec<Record>> = vec![Vec::new(); MATRIX.len()];
    for _ in 0..reps {
        for (i, &(id, size)) in MATRIX.iter().enumerate() {
            let rec = if id == "startup" { startup(args.rt)? } else { spawn_once(id, size, args)? };
            emit(&rec.to_line());
            by[i].push(rec);
        }
    }
    if reps > 1 {
        for recs in &by {
            summarize(recs);
        }
    }
    Ok(())
}
