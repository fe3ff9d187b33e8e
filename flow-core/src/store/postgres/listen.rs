//! Waking workers across processes: a dedicated connection per store (outside the pool, which
//! would drop notifications) `LISTEN`s on the schema's work channel, and every notification
//! wakes the store's waiters.
//!
//! The connection starts with the first `wait_for_work` and lives as long as the store (its
//! clones included). When it drops (a restart, a failover, a network cut) it reconnects with
//! backoff; meanwhile, and when it cannot connect at all, waiting simply lasts the caller's
//! timeout, so workers fall back to polling. After each (re)connection the waiters are woken
//! once, since notifications sent while nobody listened are lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Config, NoTls};
use tokio_util::sync::CancellationToken;

/// The first pause before reconnecting, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a [`super::PgStore`] and its clones share for `wait_for_work`.
pub(super) struct Wake {
    /// Woken by the listener's notifications and by this store's own writes.
    pub(super) work: Arc<Notify>,
    /// How to reach the server outside the pool; `None`: no listener, waiting polls.
    config: Option<Config>,
    /// The schema's channel (`flows_work_<hash of the schema name>`).
    channel: String,
    /// Where the store is, for the log.
    shown: String,
    started: AtomicBool,
    stop: CancellationToken,
}

impl Wake {
    pub(super) fn new(config: Option<Config>, channel: String, shown: String) -> Self {
        Wake {
            work: Arc::new(Notify::new()),
            config,
            channel,
            shown,
            started: AtomicBool::new(false),
            stop: CancellationToken::new(),
        }
    }

    /// The same channel and place, listening through `config`.
    pub(super) fn with_config(&self, config: Config) -> Self {
        Wake::new(Some(config), self.channel.clone(), self.shown.clone())
    }

    /// Starts the listener unless it runs already (or cannot run: no configuration).
    pub(super) fn start(&self) {
        let Some(config) = &self.config else { return };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut config = config.clone();
        // A connection that only listens sends nothing, so a peer that vanished without a word
        // is found by TCP keepalives alone: probe soon and often.
        config.keepalives(true).keepalives_idle(Duration::from_secs(30)).keepalives_interval(Duration::from_secs(10));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let listener = Listener {
            config,
            channel: self.channel.clone(),
            shown: self.shown.clone(),
            work: Arc::clone(&self.work),
            stop: self.stop.clone(),
        };
        tokio::spawn(listener.run());
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Listener {
    config: Config,
    channel: String,
    shown: String,
    work: Arc<Notify>,
    stop: CancellationToken,
}

impl Listener {
    async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let outcome = tokio::select! {
                () = self.stop.cancelled() => return,
                outcome = self.session(&mut backoff) => outcome,
            };
            match outcome {
                Ok(()) => tracing::info!(database = %self.shown, "the work listener's connection closed; reconnecting"),
                Err(e) => tracing::warn!(
                    database = %self.shown,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "the work listener lost its connection or cannot connect; workers poll until it is back"
                ),
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: listens, then wakes the waiters at each notification until it ends.
    async fn session(&self, backoff: &mut Duration) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        // The channel is `flows_work_` and a number, so quoting it is all it needs.
        let statement = format!("LISTEN \"{}\"", self.channel);
        let listen = client.batch_execute(&statement);
        tokio::pin!(listen);
        let mut listening = false;
        loop {
            tokio::select! {
                done = &mut listen, if !listening => {
                    done?;
                    listening = true;
                    *backoff = FIRST_BACKOFF;
                    tracing::debug!(database = %self.shown, channel = %self.channel, "listening for work");
                    // Whatever was sent while nobody listened is lost: let the waiters look.
                    self.work.notify_waiters();
                }
                message = futures::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                    Some(Ok(AsyncMessage::Notification(_))) => self.work.notify_waiters(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
            }
        }
    }
}
