//! Process figures (`/proc/self/status`) and the JSON record each measurement prints.

use serde_json::{Map, Value};

/// A field of `/proc/self/status` in its unit (kB for `Vm*`), or -1 if it cannot be read
/// (not Linux).
pub fn proc_status(key: &str) -> i64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else { return -1 };
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(-1)
}

/// Peak resident set size of this process so far, KiB (`VmHWM`).
pub fn peak_rss_kb() -> i64 {
    proc_status("VmHWM")
}

/// Resident set size now, KiB (`VmRSS`).
pub fn cur_rss_kb() -> i64 {
    proc_status("VmRSS")
}

/// The scheduler's account of this process, summed over its threads
/// (`/proc/self/task/*/schedstat`): time on a CPU, time runnable but waiting for one, and
/// how many times a thread was put on a CPU. All zero where it cannot be read (not Linux).
///
/// W5 reports it per step beside the wall time: a durable step that is slower than a bare
/// commit while using no more CPU lost its time waiting, not computing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sched {
    /// Nanoseconds on a CPU.
    pub on_cpu_ns: u64,
    /// Nanoseconds runnable but waiting in a run queue.
    pub runq_ns: u64,
    /// Times a thread was scheduled in.
    pub slices: u64,
}

impl Sched {
    /// The process's figures now. Threads that ended before this call are not counted.
    pub fn now() -> Self {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Sched::default() };
        tasks.filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()).fold(
            Sched::default(),
            |sum, text| {
                let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
                let mut next = || fields.next().unwrap_or(0);
                Sched { on_cpu_ns: sum.on_cpu_ns + next(), runq_ns: sum.runq_ns + next(), slices: sum.slices + next() }
            },
        )
    }

    /// What happened since `earlier`.
    pub fn since(self, earlier: Sched) -> Sched {
        Sched {
            on_cpu_ns: self.on_cpu_ns.saturating_sub(earlier.on_cpu_ns),
            runq_ns: self.runq_ns.saturating_sub(earlier.runq_ns),
            slices: self.slices.saturating_sub(earlier.slices),
        }
    }
}

/// One measurement: a JSON object with the reference scripts' field names.
#[derive(Debug, Default, Clone)]
pub struct Record(pub Map<String, Value>);

impl Record {
    /// A record for `workload` (`w1`, ...) at `size`, measuring `variant` (`engine`, `limit`, ...).
    pub fn new(workload: &str, variant: &str, size: usize) -> Self {
        let mut r = Record::default();
        r.set("engine", "flows");
        r.set("version", env!("CARGO_PKG_VERSION"));
        r.set("workload", workload);
        r.set("variant", variant);
        r.set("size", size);
        r
    }

    /// Sets a field.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    /// Sets a float field rounded to 9 significant decimals (like the reference scripts' 6).
    pub fn set_f(&mut self, key: &str, value: f64) -> &mut Self {
        let v = (value * 1e9).round() / 1e9;
        self.set(key, v)
    }

    /// A field, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A numeric field, if set.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.0.get(key).and_then(Value::as_f64)
    }

    /// Records the wall time of the timed region and the derived per-step figure.
    pub fn timing(&mut self, wall_s: f64, steps: usize) -> &mut Self {
        self.set_f("wall_s", wall_s);
        self.set("steps", steps);
        self.set_f("per_step_us", wall_s / steps.max(1) as f64 * 1e6);
        self
    }

    /// Records the process's memory and threads at the end of the measurement.
    pub fn process_end(&mut self) -> &mut Self {
        self.set("peak_rss_kb", peak_rss_kb());
        self.set("cur_rss_kb", cur_rss_kb());
        self.set("os_threads_end", proc_status("Threads"));
        self
    }

    /// The record as one line of JSON.
    pub fn to_line(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    /// Parses a line printed by [`Record::to_line`].
    pub fn from_line(line: &str) -> Option<Self> {
        match serde_json::from_str(line.trim()) {
            Ok(Value::Object(map)) => Some(Record(map)),
            _ => None,
        }
    }
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    Some(if xs.len() % 2 == 1 { xs[mid] } else { (xs[mid - 1] + xs[mid]) / 2.0 })
}

/// The median record of several runs of one measurement: the first record's fields, with
/// every numeric field replaced by its median, plus `reps` and `stat: "median"`.
pub fn median_record(records: &[Record]) -> Option<Record> {
    let first = records.first()?;
    let mut out = first.clone();
    for (key, value) in &first.0 {
        if value.is_number() && key != "size" && key != "steps" {
            let xs: Vec<f64> = records.iter().filter_map(|r| r.num(key)).collect();
            let integral = value.is_i64() || value.is_u64();
            match median(xs) {
                Some(m) if integral && m.fract() == 0.0 => {
                    out.set(key, m as i64);
                }
                Some(m) => {
                    out.set_f(key, m);
                }
                None => {}
            }
        }
    }
    let ok = records.iter().all(|r| r.get("ok").and_then(Value::as_bool).unwrap_or(false));
    out.set("ok", ok);
    out.set("reps", records.len());
    out.set("stat", "median");
    if let Some(min) = records.iter().filter_map(|r| r.num("wall_s")).min_by(f64::total_cmp) {
        out.set_f("min_wall_s", min);
    }
    if let Some(max) = records.iter().filter_map(|r| r.num("wall_s")).max_by(f64::total_cmp) {
        out.set_f("max_wall_s", max);
    }
    Some(out)
}
