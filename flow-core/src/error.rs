//! Errors: [`Error`], what a flow method returns when it fails, and [`FlowError`], what running a
//! flow returns when the run cannot complete.
//!
//! A method error carries an [`ErrorClass`] that decides whether the runtime retries it:
//!
//! ```
//! use flow_core::{Error, ErrorClass};
//!
//! let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer reset");
//! assert_eq!(Error::from(io).class(), ErrorClass::Transient);
//! assert_eq!(Error::msg("order not found").class(), ErrorClass::Permanent);
//! assert_eq!(Error::transient("label service returned 503").class(), ErrorClass::Transient);
//! ```

use std::error::Error as StdError;
use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

/// `Result` with the method error [`Error`] as its default error type.
///
/// ```
/// use flow_core::Result;
///
/// fn parse_amount(text: &str) -> Result<u32> {
///     // Any std error converts with `?`, keeping its class (parse errors are permanent).
///     Ok(text.trim().parse::<u32>()?)
/// }
/// assert_eq!(parse_amount(" 42 ").ok(), Some(42));
/// assert!(parse_amount("forty").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a failed method is worth running again.
///
/// ```
/// use flow_core::{Error, ErrorClass};
///
/// let timeout = Error::transient("the label service timed out");
/// assert_eq!(timeout.class(), ErrorClass::Transient);
/// let refused = Error::msg("card declined").with_class(ErrorClass::Permanent);
/// assert_eq!(refused.class(), ErrorClass::Permanent);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// May succeed on another attempt: timeouts, I/O, rate limits, 5xx. Retried by the
    /// method's retry policy.
    Transient,
    /// Will fail again: bad input, a bug, a refused request. Never retried.
    Permanent,
    /// A model's reply that does not parse into the expected type. Retried up to the policy's
    /// `invalid_reply` attempts.
    InvalidReply,
}

/// Decides the class of an error type of your own.
///
/// Implement it and register the type with [`classify_errors!`](crate::classify_errors) so that
/// `?` into [`Error`] keeps the class:
///
/// ```
/// use flow_core::{Classify, Error, ErrorClass};
///
/// #[derive(Debug, thiserror::Error)]
/// enum LabelError {
///     #[error("label service unavailable")]
///     Unavailable,
///     #[error("address rejected")]
///     BadAddress,
/// }
///
/// impl Classify for LabelError {
///     fn class(&self) -> ErrorClass {
///         match self {
///             LabelError::Unavailable => ErrorClass::Transient,
///             LabelError::BadAddress => ErrorClass::Permanent,
///         }
///     }
/// }
/// flow_core::classify_errors!(LabelError);
///
/// assert_eq!(Error::from(LabelError::Unavailable).class(), ErrorClass::Transient);
/// ```
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

/// A function that recognises one error type anywhere in a source chain.
#[doc(hidden)]
pub struct Classifier(pub fn(&(dyn StdError + 'static)) -> Option<ErrorClass>);

inventory::collect!(Classifier);

/// Registers error types that implement [`Classify`], so their class survives `?`.
#[macro_export]
macro_rules! classify_errors {
    ($($ty:ty),+ $(,)?) => {
        $(
            $crate::__private::inventory::submit! {
                $crate::__private::Classifier(|e| {
                    e.downcast_ref::<$ty>().map(<$ty as $crate::Classify>::class)
                })
            }
        )+
    };
}

fn classify(err: &(dyn StdError + 'static)) -> ErrorClass {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        for c in inventory::iter::<Classifier> {
            if let Some(class) = (c.0)(e) {
                return class;
            }
        }
        if e.is::<std::io::Error>() || e.is::<tokio::time::error::Elapsed>() {
            return ErrorClass::Transient;
        }
        cur = e.source();
    }
    ErrorClass::Permanent
}

/// What ended a method other than an ordinary error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// The method asked for the run to be escalated to a person.
    Escalate,
    /// The method replayed effects in a different order than recorded.
    NonDeterminism,
    /// The method panicked.
    Panic,
    /// The attempt ran past its timeout.
    Timeout,
    /// The step could not read or write its journal: the store failed (a database restarting,
    /// a lost lease). Not the method's failure: the execution stops without recording one,
    /// and the run is continued once the store answers.
    Store,
}

/// The error a flow method returns.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into it with `?`, keeping the
/// source chain and a class: I/O errors and timeouts are [`ErrorClass::Transient`], types
/// registered with [`classify_errors!`](crate::classify_errors) decide for themselves, anything
/// else is [`ErrorClass::Permanent`].
///
/// ```
/// use flow_core::{Error, ErrorClass};
///
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
/// let err = Error::from(io).context("fetching the invoice");
/// assert_eq!(err.class(), ErrorClass::Transient);
/// assert_eq!(err.message(), "fetching the invoice: connect timed out");
/// assert!(err.downcast_ref::<std::io::Error>().is_some());
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    class: ErrorClass,
    special: Option<Special>,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    fn new(class: ErrorClass, message: String) -> Self {
        Error { inner: Box::new(Inner { class, special: None, message, source: None }) }
    }

    /// A permanent error with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::new(ErrorClass::Permanent, message.to_string())
    }

    /// A transient error with a message: the method's retry policy applies.
    pub fn transient(message: impl fmt::Display) -> Self {
        Self::new(ErrorClass::Transient, message.to_string())
    }

    /// A permanent error with a message: never retried.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::new(ErrorClass::Permanent, message.to_string())
    }

    /// A model reply that does not parse, with the raw reply kept in the message.
    pub fn invalid_reply(message: impl fmt::Display) -> Self {
        Self::new(ErrorClass::InvalidReply, message.to_string())
    }

    /// Ends the run as needing a person, with the reason. The run's status becomes
    /// [`RunStatus::Escalated`](crate::RunStatus::Escalated): not a failure, not a pause.
    ///
    /// ```
    /// use flow_core::Error;
    /// let e = Error::escalate("return requested 75 days after delivery (limit 60)");
    /// assert!(e.is_escalation());
    /// ```
    pub fn escalate(reason: impl fmt::Display) -> Self {
        let mut e = Self::new(ErrorClass::Permanent, reason.to_string());
        e.inner.special = Some(Special::Escalate);
        e
    }

    pub(crate) fn special(special: Special, message: impl fmt::Display) -> Self {
        let class = match special {
            Special::Timeout | Special::Store => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        };
        let mut e = Self::new(class, message.to_string());
        e.inner.special = Some(special);
        e
    }

    /// Wraps an error, overriding its class.
    pub fn with_class(mut self, class: ErrorClass) -> Self {
        self.inner.class = class;
        self
    }

    /// Adds context in front of the message, keeping class and source.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.inner.message = format!("{context}: {}", self.inner.message);
        self
    }

    /// The class that decides retries.
    pub fn class(&self) -> ErrorClass {
        self.inner.class
    }

    /// Whether the method asked for escalation to a person.
    pub fn is_escalation(&self) -> bool {
        self.inner.special == Some(Special::Escalate)
    }

    /// Whether the attempt ran past its timeout.
    pub fn is_timeout(&self) -> bool {
        self.inner.special == Some(Special::Timeout)
    }

    /// Whether the method panicked.
    pub fn is_panic(&self) -> bool {
        self.inner.special == Some(Special::Panic)
    }

    pub(crate) fn special_kind(&self) -> Option<&Special> {
        self.inner.special.as_ref()
    }

    /// The message, without the source chain.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Looks for an error of type `E` in the source chain.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        let mut cur: Option<&(dyn StdError + 'static)> = self.inner.source.as_deref().map(|s| s as _);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            cur = e.source();
        }
        None
    }

    /// The whole chain, `message: cause: cause`.
    pub fn chain_text(&self) -> String {
        let mut s = self.inner.message.clone();
        let mut cur: Option<&(dyn StdError + 'static)> = self.inner.source.as_deref().map(|s| s as _);
        // The message of a wrapped error is its own Display, so start at its source.
        if let Some(e) = cur {
            cur = e.source();
        }
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }

    /// Converts into a boxed standard error (for `?` into other error types).
    pub fn into_std(self) -> Box<dyn StdError + Send + Sync + 'static> {
        Box::new(StepFailure { text: self.chain_text(), class: self.inner.class, source: self.inner.source })
    }
}

impl<E> From<E> for Error
where
    E: StdError + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        let class = classify(&err);
        Error { inner: Box::new(Inner { class, special: None, message: err.to_string(), source: Some(Box::new(err)) }) }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("class", &self.inner.class)
            .field("special", &self.inner.special)
            .field("message", &self.chain_text())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() { f.write_str(&self.chain_text()) } else { f.write_str(&self.inner.message) }
    }
}

/// A method error as a standard error, inside [`FlowError::MethodFailed`].
///
/// ```
/// use flow_core::prelude::*;
/// use flow_core::error::StepFailure;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Fails;
///
/// #[flow(state = S)]
/// impl Fails {
///     #[start]
///     async fn only(&self) -> Result<()> { Err(Error::permanent("no such customer")) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let Err(FlowError::MethodFailed { source, .. }) = Fails.kickoff(S).await else { panic!("fails") };
/// let failure = source.downcast_ref::<StepFailure>().expect("the step's error");
/// assert_eq!(failure.class(), ErrorClass::Permanent);
/// assert_eq!(failure.to_string(), "no such customer");
/// # }
/// ```
#[derive(Debug)]
pub struct StepFailure {
    text: String,
    class: ErrorClass,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl StepFailure {
    /// The class of the method error.
    pub fn class(&self) -> ErrorClass {
        self.class
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl StdError for StepFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as _)
    }
}

/// Why a run could not go on. Every variant names the run and says what to do.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Fails;
///
/// #[flow(state = S)]
/// impl Fails {
///     #[start]
///     async fn lookup(&self) -> Result<()> { Err(Error::permanent("no such customer")) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// match Fails.kickoff(S).await {
///     Err(FlowError::MethodFailed { run_id, method, attempt, message, .. }) => {
///         assert_eq!((method.as_str(), attempt, message.as_str()), ("lookup", 1, "no such customer"));
///         let _ = run_id; // the id to resume or inspect the run with
///     }
///     other => panic!("expected a method failure, got {:?}", other.err()),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A method failed after its retries. With a store the run is stored as failed and can be
    /// resumed; without one it is gone, and the error says so rather than advise a resume.
    #[error(
        "run {run_id}: method `{method}` failed on attempt {attempt}: {message}; {advice}",
        advice = if *resumable {
            format!("fix the cause and resume the run to run `{method}` again")
        } else {
            "the run was not stored (the runner has no store), so nothing can take it up again: fix the cause and kick off a new run".to_string()
        }
    )]
    MethodFailed {
        /// The run.
        run_id: Uuid,
        /// The method that failed.
        method: String,
        /// Attempts made.
        attempt: u32,
        /// The method's error, chain included.
        message: String,
        /// The error's class.
        class: ErrorClass,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync + 'static>,
        /// The run's state when it failed, as JSON (see [`FlowError::state_as`]).
        state: Box<Value>,
        /// Whether the run is stored, failed, and can be resumed ([`FlowError::is_resumable`]).
        resumable: bool,
    },
    /// A method was called more often than the flow's `max_calls` allows: a runaway loop.
    #[error(
        "run {run_id}: method `{method}` was called more than {limit} times; a loop does not end. Raise `max_calls` on #[flow] if the loop is meant to run longer"
    )]
    CallLimit {
        /// The run.
        run_id: Uuid,
        /// The method whose call count ran out.
        method: String,
        /// The limit.
        limit: u32,
        /// The run's state when it stopped, as JSON.
        state: Box<Value>,
    },
    /// The run's compensation (undo) steps ran after a failure and some of them failed: the
    /// steps they undo are still done. (A compensation whose undo steps all succeed is not an
    /// error but [`RunOutcome::Compensated`](crate::RunOutcome::Compensated).)
    #[error(
        "run {run_id}: method `{method}` failed ({message}); compensation ran: {compensation}; {failed} undo step(s) failed \
         and the steps they undo are still done: {advice}",
        advice = if *resumable {
            "fix the cause and resume the run to try them again"
        } else {
            "the run was not stored (the runner has no store), so undo them by hand"
        }
    )]
    Compensated {
        /// The run.
        run_id: Uuid,
        /// The method whose failure started compensation.
        method: String,
        /// Its error.
        message: String,
        /// What the compensation did, per undo step.
        compensation: String,
        /// How many undo steps failed.
        failed: usize,
        /// The run's state after its compensation, as JSON.
        state: Box<Value>,
        /// Whether the run is stored and a resume tries the failed undo steps again.
        resumable: bool,
    },
    /// The run was cancelled on request (`Store::request_cancel`, `Runner::cancel`, `flows
    /// cancel`): its completed steps were compensated, newest first, and it is stored
    /// `cancelled`. Nothing continues it; fork an earlier checkpoint to take it up again.
    #[error("run {run_id} was cancelled ({reason}); {compensation}")]
    Cancelled {
        /// The run.
        run_id: Uuid,
        /// The reason given with the request.
        reason: String,
        /// What the compensation did, per undo step, or that there was nothing to undo.
        compensation: String,
        /// The run's state after its compensation, as JSON.
        state: Box<Value>,
    },
    /// The runner has no store, so there is nothing to resume, fork or list.
    #[error(
        "run {run_id}: this runner has no store; give it one with `Runner::with_store` (SqliteStore or MemoryStore) to persist, pause, resume and fork runs"
    )]
    NoStore {
        /// The run asked for.
        run_id: Uuid,
    },
    /// The run's flow is not registered with this worker.
    #[error(
        "run {run_id} belongs to flow `{flow}`, which this worker does not know (registered: {registered:?}; compiled into this binary: {compiled_in}); register it with `Worker::register`"
    )]
    UnknownFlow {
        /// The run.
        run_id: Uuid,
        /// The flow stored with the run.
        flow: String,
        /// Whether a flow of that name is compiled into this binary (see `registered_flows`).
        compiled_in: bool,
        /// The flows the worker knows.
        registered: Vec<String>,
    },
    /// The task executing the run stopped unexpectedly (a bug in flows, or the runtime shutting
    /// down); a stored run is resumable from its last checkpoint.
    #[error(
        "run {run_id}: its execution stopped unexpectedly ({message}); {advice}",
        advice = if *resumable {
            "resume it to continue from its last checkpoint"
        } else {
            "the run was not stored (the runner has no store), so nothing can take it up again: kick off a new run"
        }
    )]
    Aborted {
        /// The run.
        run_id: Uuid,
        /// What tokio said.
        message: String,
        /// Whether the run is stored and can be resumed.
        resumable: bool,
    },
    /// No run with this id exists in the store.
    #[error("run {0} not found in the store; check the id and the store path")]
    RunNotFound(Uuid),
    /// The run belongs to another flow.
    #[error("run {run_id} belongs to flow `{found}`, not `{expected}`; resume it with a runner of `{found}`")]
    WrongFlow {
        /// The run.
        run_id: Uuid,
        /// The flow asked to resume it.
        expected: String,
        /// The flow stored with the run.
        found: String,
    },
    /// The run is held by another live process.
    #[error(
        "run {run_id} is being run by `{owner}` (lease until {expires_at_ms} ms since epoch); wait for it to finish or for the lease to expire"
    )]
    RunLocked {
        /// The run.
        run_id: Uuid,
        /// The holder.
        owner: String,
        /// Lease expiry, milliseconds since the Unix epoch.
        expires_at_ms: i64,
    },
    /// This process lost the run to another one (its lease expired and was taken over).
    #[error(
        "run {run_id}: lease lost to another worker (this process was too slow to renew it, or the run was \
         taken over); this process stopped running it and wrote nothing more. The worker holding it now goes \
         on with it; if none does, resume the run once its lease expires"
    )]
    LeaseLost {
        /// The run.
        run_id: Uuid,
    },
    /// [`Runner::submit_with_id`](crate::Runner::submit_with_id) was given an id that a run of
    /// another flow holds. Nothing was stored.
    #[error(
        "run id {run_id} is taken by a run of flow `{existing_flow}`, so this run of `{flow}` was not submitted \
         and nothing was stored; submit it under another id (run ids are unique across all flows of a store)"
    )]
    DuplicateRunId {
        /// The id.
        run_id: Uuid,
        /// The flow the submission was for.
        flow: String,
        /// The flow of the run that holds the id.
        existing_flow: String,
    },
    /// The run cannot be resumed in its current status.
    #[error("run {run_id} is {status} and cannot be {action}")]
    InvalidStatus {
        /// The run.
        run_id: Uuid,
        /// Its status.
        status: crate::RunStatus,
        /// What was asked.
        action: &'static str,
    },
    /// An answer was given to a run that is not waiting for it: the run is completed, failed,
    /// escalated or running, or it now waits at another question than the one the answer was
    /// for. Nothing was delivered and the run is as it was.
    #[error("run {run_id} is {status} and not waiting for this answer; the answer was not delivered: {advice}")]
    NotWaiting {
        /// The run.
        run_id: Uuid,
        /// Its status when the answer arrived.
        status: crate::RunStatus,
        /// What to do instead.
        advice: String,
    },
    /// The stored state does not fit the state type.
    #[error(
        "run {run_id}: stored state does not fit `{state_type}` at `{path}`: {message}; the row is left untouched: add `#[serde(default)]` to new fields or migrate the row"
    )]
    StateMismatch {
        /// The run.
        run_id: Uuid,
        /// The state type.
        state_type: &'static str,
        /// Where in the state the mismatch is (`field.sub`), `.` for the root.
        path: String,
        /// What serde said.
        message: String,
    },
    /// The answer given to a paused run does not fit the requested type.
    #[error(
        "run {run_id}: the input does not fit `{expected}` ({message}); the run stays paused, resume it with a valid input"
    )]
    InvalidInput {
        /// The run.
        run_id: Uuid,
        /// The type the method asked for.
        expected: String,
        /// What serde said.
        message: String,
    },
    /// The inputs given to [`Runner::kickoff_with_inputs`](crate::Runner::kickoff_with_inputs)
    /// do not fit the state: a key that is not one of its fields, or a value of the wrong type.
    /// They were refused before anything was stored: no run exists.
    #[error(
        "kickoff input `{key}` was refused for state `{state_type}`: {problem}; expected {expected}. \
         No run was started and nothing was stored: fix the input and kick off again"
    )]
    InvalidInputs {
        /// The state type.
        state_type: &'static str,
        /// The input's top-level key (`.` when the inputs are not an object).
        key: String,
        /// What is wrong with it.
        problem: String,
        /// What would fit there.
        expected: String,
    },
    /// A stored record is damaged.
    #[error(
        "run {run_id}: stored record is corrupt ({what}); it was not modified: fork the run from an earlier \
         checkpoint (`Runner::fork`), or repair the record by hand"
    )]
    Corrupt {
        /// The run.
        run_id: Uuid,
        /// What could not be read.
        what: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A value that JSON cannot hold faithfully (a NaN or infinite float, a map key that is not
    /// a string or a number) was refused before it was stored: serde_json would write the float
    /// as `null`, which reads back as something else or not at all.
    ///
    /// ```
    /// use flow_core::error::UnfaithfulValue;
    ///
    /// assert_eq!(UnfaithfulValue::NaN.to_string(), "NaN");
    /// assert!(UnfaithfulValue::Key("a tuple").advice().contains("string"));
    /// ```
    #[error(
        "run {run_id}: {what} holds {value} at `{path}`, which JSON cannot hold faithfully; {advice}; {outcome}",
        advice = value.advice(),
        outcome = if *run_stored {
            "the step's changes were not stored and the run stays at its last good checkpoint (failed): fix the flow and resume the run to run the step again"
        } else {
            "nothing was stored and the run was not started"
        }
    )]
    Unfaithful {
        /// The run.
        run_id: Uuid,
        /// The method whose completion produced the value; `None` for the state a run starts
        /// with.
        method: Option<String>,
        /// What held the value: the state after a step, or the state a run was started with.
        what: String,
        /// Where in it, as `items[2].price` (`.` for the value itself).
        path: String,
        /// What was refused.
        value: UnfaithfulValue,
        /// Whether the run is in the store, at its last good checkpoint (a step left the value),
        /// or was not created at all (the state it was started with holds the value).
        run_stored: bool,
    },
    /// The initial state or an output could not be serialized.
    #[error("run {run_id}: could not serialize {what}: {message}")]
    Serialize {
        /// The run.
        run_id: Uuid,
        /// What.
        what: String,
        /// What serde said.
        message: String,
    },
}

/// A value that JSON cannot hold faithfully, in [`FlowError::Unfaithful`] and in the errors of
/// steps whose output or effect result holds one.
///
/// ```
/// use flow_core::error::UnfaithfulValue;
///
/// // Each kind says how to hold the value faithfully instead.
/// assert!(!UnfaithfulValue::NaN.advice().is_empty());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnfaithfulValue {
    /// A float that is not a number (serde_json writes it as `null`).
    NaN,
    /// Positive infinity (serde_json writes it as `null`).
    Infinity,
    /// Negative infinity (serde_json writes it as `null`).
    NegativeInfinity,
    /// A map key that JSON cannot hold as an object key: what it is (`a tuple`, `a struct`).
    Key(&'static str),
}

impl UnfaithfulValue {
    /// What to change so the value can be stored.
    pub fn advice(self) -> &'static str {
        match self {
            UnfaithfulValue::NaN | UnfaithfulValue::Infinity | UnfaithfulValue::NegativeInfinity => {
                "keep only finite numbers there (check with `f64::is_finite`), or use `Option<f64>` with `None` where there is no number"
            }
            UnfaithfulValue::Key(_) => {
                "key the map by strings, integers or unit enum variants (format the key as a string, e.g. \"3,4\"), or store a `Vec` of (key, value) pairs"
            }
        }
    }
}

impl fmt::Display for UnfaithfulValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnfaithfulValue::NaN => f.write_str("NaN"),
            UnfaithfulValue::Infinity => f.write_str("an infinite float (inf)"),
            UnfaithfulValue::NegativeInfinity => f.write_str("an infinite float (-inf)"),
            UnfaithfulValue::Key(what) => write!(f, "a map key that is {what} (JSON object keys are strings)"),
        }
    }
}

impl FlowError {
    /// The run the error is about; `None` for [`FlowError::InvalidInputs`] (no run was
    /// started) and for [`FlowError::Store`] (its text names the run when the store knows it).
    ///
    /// ```
    /// use flow_core::prelude::*;
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S { tries: u32 }
    /// struct Fails;
    ///
    /// #[flow(state = S)]
    /// impl Fails {
    ///     #[start]
    ///     async fn charge(&self, cx: &Ctx<S>) -> Result<()> {
    ///         cx.update(|s| s.tries += 1);
    ///         Err(Error::permanent("card declined"))
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = Fails.kickoff(S::default()).await.err().expect("charge fails");
    /// assert!(err.run_id().is_some());
    /// // The state the run failed with: the failing step's own updates are discarded.
    /// assert_eq!(err.state_as::<S>().map(|s| s.map(|s| s.tries)).transpose().ok().flatten(), Some(0));
    /// // Without a store nothing can be resumed, and the error does not say to.
    /// assert!(!err.is_resumable());
    /// assert!(!err.to_string().contains("resume"));
    /// # }
    /// ```
    pub fn run_id(&self) -> Option<Uuid> {
        match self {
            FlowError::MethodFailed { run_id, .. }
            | FlowError::CallLimit { run_id, .. }
            | FlowError::Compensated { run_id, .. }
            | FlowError::Cancelled { run_id, .. }
            | FlowError::NoStore { run_id }
            | FlowError::UnknownFlow { run_id, .. }
            | FlowError::Aborted { run_id, .. }
            | FlowError::RunNotFound(run_id)
            | FlowError::WrongFlow { run_id, .. }
            | FlowError::RunLocked { run_id, .. }
            | FlowError::LeaseLost { run_id }
            | FlowError::DuplicateRunId { run_id, .. }
            | FlowError::InvalidStatus { run_id, .. }
            | FlowError::NotWaiting { run_id, .. }
            | FlowError::StateMismatch { run_id, .. }
            | FlowError::InvalidInput { run_id, .. }
            | FlowError::Corrupt { run_id, .. }
            | FlowError::Unfaithful { run_id, .. }
            | FlowError::Serialize { run_id, .. } => Some(*run_id),
            FlowError::InvalidInputs { .. } | FlowError::Store(_) => None,
        }
    }

    /// The run's state when it stopped, as JSON: for a method that failed
    /// ([`FlowError::MethodFailed`]), a runaway loop ([`FlowError::CallLimit`]), a
    /// compensation with failed undo steps ([`FlowError::Compensated`]) and a cancelled run
    /// ([`FlowError::Cancelled`]). A failing step's own state updates are not in it.
    pub fn state(&self) -> Option<&Value> {
        match self {
            FlowError::MethodFailed { state, .. }
            | FlowError::CallLimit { state, .. }
            | FlowError::Compensated { state, .. }
            | FlowError::Cancelled { state, .. } => Some(&**state),
            _ => None,
        }
    }

    /// [`FlowError::state`] as the flow's state type: `None` when the error holds no state.
    pub fn state_as<T: DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.state().map(T::deserialize)
    }

    /// Whether the run is stored and [`Runner::resume`](crate::Runner::resume) takes it up
    /// again from where it stopped: a failed method of a stored run, an interrupted one, a
    /// compensation whose failed undo steps a resume tries again. A run without a store never
    /// is, and its error text does not say to resume it.
    pub fn is_resumable(&self) -> bool {
        match self {
            FlowError::MethodFailed { resumable, .. }
            | FlowError::Compensated { resumable, .. }
            | FlowError::Aborted { resumable, .. } => *resumable,
            FlowError::Unfaithful { run_stored, method, .. } => *run_stored && method.is_some(),
            _ => false,
        }
    }

    /// The method that failed, for [`FlowError::MethodFailed`] and [`FlowError::CallLimit`].
    pub fn method(&self) -> Option<&str> {
        match self {
            FlowError::MethodFailed { method, .. }
            | FlowError::CallLimit { method, .. }
            | FlowError::Compensated { method, .. } => Some(method),
            FlowError::Unfaithful { method, .. } => method.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_in_chain_is_transient() {
        #[derive(Debug, thiserror::Error)]
        #[error("fetch failed")]
        struct Wrap(#[source] std::io::Error);
        let e = Error::from(Wrap(std::io::Error::other("x")));
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(e.chain_text(), "fetch failed: x");
    }

    #[test]
    fn plain_errors_are_permanent() {
        let e = Error::from(std::fmt::Error);
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.downcast_ref::<std::fmt::Error>().is_some());
    }
}
