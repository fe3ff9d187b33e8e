//! Order fulfilment served by a fleet of worker processes over one PostgreSQL: `cargo run
//! --example fleet -- worker NAME` serves, `-- submit N` queues N orders, `-- watch` counts
//! them by status and by the worker that finished them until none is left to do.
//!
//! The flow reserves stock, charges the customer (a journaled effect: a run taken over after
//! the charge never charges twice) and books the shipment. Each step writes down which worker
//! ran it, so a run that moved from one worker to another says so in its state, and `watch`
//! counts those as taken over.
//!
//! ```no_run
//! use flow_examples::fleet;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), flow_examples::ExampleError> {
//! let store = fleet::connect(&fleet::database_url()).await?;
//! let ids = fleet::submit(&store, 10).await?;
//! let tally = fleet::tally(&store, &mut Default::default()).await?;
//! assert!(tally.total >= ids.len());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flow_core::prelude::*;
use flow_core::store::{PgStore, RunFilter, Store};
use flow_core::{RunStatus, ServeOptions, Worker};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ExampleError;
use crate::setup::{StoreLocation, operate_hint};

/// One order on its way through the warehouse.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order number.
    pub number: u64,
    /// Who ordered.
    pub customer: String,
    /// What it costs, in cents.
    pub amount_cents: u64,
    /// The payment provider's charge id, once charged.
    pub charge: Option<String>,
    /// The carrier's tracking number, once booked.
    pub tracking: Option<String>,
    /// `step@worker` for every step, in order: which worker did what.
    pub trail: Vec<String>,
}

impl Order {
    /// The worker that ran the last step.
    pub fn finished_by(&self) -> Option<&str> {
        self.trail.last().and_then(|s| s.split_once('@')).map(|(_, worker)| worker)
    }

    /// Whether more than one worker ran its steps (the run moved).
    pub fn moved(&self) -> bool {
        let mut workers = self.trail.iter().filter_map(|s| s.split_once('@')).map(|(_, w)| w);
        let first = workers.next();
        workers.any(|w| Some(w) != first)
    }
}

/// The fulfilment flow; `worker` is the name this process serves under, written into the
/// trail of every step it runs.
pub struct Fulfilment {
    /// The serving worker's name.
    pub worker: String,
}

impl Fulfilment {
    fn note(&self, cx: &Ctx<Order>, step: &str) {
        let entry = format!("{step}@{}", self.worker);
        cx.update(move |o| o.trail.push(entry.clone()));
    }
}

#[flow(state = Order, name = "fleet_order")]
impl Fulfilment {
    #[start]
    async fn reserve(&self, cx: &Ctx<Order>) -> Result<()> {
        // Stands in for the warehouse system's reservation call.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.note(cx, "reserve");
        Ok(())
    }

    #[listen(reserve)]
    async fn charge(&self, cx: &Ctx<Order>) -> Result<()> {
        let amount = cx.read(|o| o.amount_cents);
        // The payment provider is called once per run whoever runs this step: a worker taking
        // the run over after the charge gets the journaled charge id back.
        let charge: String = cx
            .effect("charge", |key| async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok(format!("ch_{}_{amount}", key.replace([':', '#'], "_")))
            })
            .await?;
        cx.update(move |o| o.charge = Some(charge.clone()));
        self.note(cx, "charge");
        Ok(())
    }

    #[listen(charge)]
    async fn ship(&self, cx: &Ctx<Order>) -> Result<()> {
        // Stands in for booking a carrier.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let tracking = format!("TRK{:08}", cx.read(|o| o.number));
        cx.update(move |o| o.tracking = Some(tracking.clone()));
        self.note(cx, "ship");
        Ok(())
    }
}

/// The flow's registered name, as `flows runs` shows it.
pub const FLOW: &str = "fleet_order";

/// The server used when `DATABASE_URL` is not set: the `postgres` database of a local server
/// that trusts local connections (what the README's Docker line starts).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long a worker's claim lasts without a heartbeat: a worker killed with `kill -9` has its
/// runs taken over by the others this long after it died (plus one poll interval).
pub const LEASE: Duration = Duration::from_secs(5);

/// How long a stopping worker (SIGTERM, ctrl-c) lets its runs in flight finish before it gives
/// the rest back to the queue.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Runs one worker executes at once.
pub const IN_FLIGHT: usize = 16;

/// Orders submitted at once by [`submit`].
const SUBMIT_AT_ONCE: usize = 16;

/// `$DATABASE_URL`, else [`DEFAULT_URL`].
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// Opens the PostgreSQL store (migrating its tables on first use).
///
/// # Errors
///
/// [`ExampleError::Store`] when the server cannot be reached or refuses; the message names
/// the host and port.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, ExampleError> {
    Ok(Arc::new(PgStore::connect(url).await?))
}

/// Serves the flow under `name` until SIGTERM or ctrl-c, then stops gracefully: no new
/// claims, runs in flight get [`STOP_DEADLINE`] to finish, the rest go back to the queue.
///
/// # Errors
///
/// As [`connect`].
pub async fn serve(url: &str, name: &str) -> Result<(), ExampleError> {
    let store = connect(url).await?;
    let worker = Worker::new(store).lease(LEASE).register(Fulfilment { worker: name.to_string() });
    let options = ServeOptions::new().name(name).max_in_flight(IN_FLIGHT).lease(LEASE);
    tracing::info!(worker = name, "worker {name} serving {FLOW} runs ({IN_FLIGHT} at a time, lease {LEASE:?})");
    let summary = worker.serve(options).until_signal(STOP_DEADLINE).await;
    tracing::info!(
        worker = name,
        "worker {name} done: claimed {}, finished {}, gave back {}",
        summary.claimed,
        summary.finished,
        summary.released.len()
    );
    Ok(())
}

/// Queues `count` orders without running them; any worker picks them up.
///
/// # Errors
///
/// [`ExampleError::Flow`] when the store refuses a run.
pub async fn submit(store: &Arc<dyn Store>, count: u64) -> Result<Vec<Uuid>, ExampleError> {
    const CUSTOMERS: [&str; 5] = ["acme", "globex", "initech", "umbrella", "hooli"];
    let runner = Arc::new(Runner::new(Fulfilment { worker: "submitter".into() }).with_shared_store(Arc::clone(store)));
    let mut ids = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    // A few inserts at a time: one round trip each would make a thousand take seconds.
    let mut batch = tokio::task::JoinSet::new();
    for number in 1..=count {
        let order = Order {
            number,
            customer: CUSTOMERS[(number % 5) as usize].to_string(),
            amount_cents: 1_000 + (number * 137) % 9_000,
            ..Order::default()
        };
        let runner = Arc::clone(&runner);
        batch.spawn(async move { runner.submit(order).await });
        if batch.len() >= SUBMIT_AT_ONCE || number == count {
            while let Some(done) = batch.join_next().await {
                let id = done.map_err(|e| ExampleError::Unexpected(format!("a submit task failed: {e}")))??;
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// Where the fleet's runs stand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Runs of the flow in the database.
    pub total: usize,
    /// Runs per status.
    pub by_status: BTreeMap<&'static str, usize>,
    /// Completed runs per worker that ran their last step.
    pub finished_by: BTreeMap<String, usize>,
    /// Completed runs whose steps more than one worker ran.
    pub taken_over: usize,
}

impl Tally {
    /// Runs still to do: queued or running.
    pub fn open(&self) -> usize {
        self.by_status.get("queued").copied().unwrap_or(0) + self.by_status.get("running").copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} runs:", self.total)?;
        for (status, n) in &self.by_status {
            write!(f, " {status} {n}")?;
        }
        write!(f, " | finished by")?;
        if self.finished_by.is_empty() {
            write!(f, " -")?;
        }
        for (worker, n) in &self.finished_by {
            write!(f, " {worker} {n}")?;
        }
        write!(f, " | taken over {}", self.taken_over)
    }
}

/// The finisher and whether it moved, per completed run: read once, since a completed run does
/// not change.
pub type Finished = HashMap<Uuid, (String, bool)>;

/// Counts the flow's runs; `seen` keeps what was read of completed runs between calls.
///
/// # Errors
///
/// [`ExampleError::Store`] when the store cannot be read, [`ExampleError::Unexpected`] when a
/// completed run's state is not an [`Order`].
pub async fn tally(store: &Arc<dyn Store>, seen: &mut Finished) -> Result<Tally, ExampleError> {
    let filter = RunFilter { flow: Some(FLOW.to_string()), ..RunFilter::default() };
    let runs = store.list_runs(&filter).await?;
    let mut tally = Tally { total: runs.len(), ..Tally::default() };
    for run in runs.iter() {
        *tally.by_status.entry(run.status.as_str()).or_default() += 1;
        if run.status != RunStatus::Completed {
            continue;
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(run.run_id) {
            let record = store.load_run(run.run_id).await?;
            let order: Order = record.snapshot.state_as().map_err(|e| {
                ExampleError::Unexpected(format!(
                    "run {} does not hold an order ({e}); is it a {FLOW} run?",
                    run.run_id
                ))
            })?;
            let by = order.finished_by().unwrap_or("?").to_string();
            slot.insert((by, order.moved()));
        }
        if let Some((by, moved)) = seen.get(&run.run_id) {
            *tally.finished_by.entry(by.clone()).or_default() += 1;
            tally.taken_over += usize::from(*moved);
        }
    }
    Ok(tally)
}

/// Prints the tally every `every` until no run is queued or running, and returns the last one.
///
/// # Errors
///
/// As [`tally`].
pub async fn watch(store: &Arc<dyn Store>, every: Duration) -> Result<Tally, ExampleError> {
    let mut seen = Finished::new();
    let started = std::time::Instant::now();
    loop {
        let tally = tally(store, &mut seen).await?;
        #[allow(clippy::print_stdout, reason = "watching is printing")]
        {
            println!("{:>5.1}s  {tally}", started.elapsed().as_secs_f64());
        }
        if tally.total > 0 && tally.open() == 0 {
            return Ok(tally);
        }
        tokio::time::sleep(every).await;
    }
}

const USAGE: &str = "usage: fleet worker [NAME] | fleet submit [COUNT] | fleet watch";

/// The example's command line (without the program name): `worker [NAME]` (default
/// `worker-PID`), `submit [COUNT]` (default 1000), `watch`. The database is `$DATABASE_URL`,
/// else [`DEFAULT_URL`].
///
/// # Errors
///
/// [`ExampleError::Unexpected`] with the usage for a command it does not know; otherwise as
/// the command's function.
pub async fn cli(args: &[String]) -> Result<(), ExampleError> {
    let url = database_url();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(0), arg(1)) {
        (Some("worker"), name) => {
            let name = name.map_or_else(|| format!("worker-{}", std::process::id()), str::to_string);
            serve(&url, &name).await
        }
        (Some("submit"), count) => {
            let count: u64 = match count {
                None => 1000,
                Some(n) => n.parse().map_err(|e| {
                    ExampleError::Unexpected(format!("COUNT {n:?} is not a whole number ({e}); {USAGE}"))
                })?,
            };
            let store = connect(&url).await?;
            let started = std::time::Instant::now();
            let ids = submit(&store, count).await?;
            #[allow(clippy::print_stdout, reason = "the command's answer")]
            {
                println!("submitted {} {FLOW} runs in {:.1}s", ids.len(), started.elapsed().as_secs_f64());
                println!("{}", operate_hint(StoreLocation::Postgres(&url), ids.first().copied()));
            }
            Ok(())
        }
        (Some("watch"), None) => {
            let store = connect(&url).await?;
            let tally = watch(&store, Duration::from_secs(1)).await?;
            #[allow(clippy::print_stdout, reason = "the command's answer")]
            {
                println!("all {} runs done", tally.total);
            }
            Ok(())
        }
        _ => Err(ExampleError::Unexpected(USAGE.to_string())),
    }
}
