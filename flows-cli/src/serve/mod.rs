//! `flows serve`: a web dashboard of a store's runs.
//!
//! Pages: the runs list (filtered by status and flow, paged newest first through the store's
//! `(created_at, run_id)` index, updating live) and a run page (its graph with each node
//! coloured by its step's status, the steps with their attempts, times, tokens and errors, the
//! state at any kept checkpoint with the change from the one before, the pending question with
//! a form built from its answer schema, and cancel and retry buttons). Live updates are
//! server-sent events (see [`live`]); the HTML comes from maud templates compiled in, the
//! script and style sheet from files compiled in (see [`assets`]).
//!
//! Safe by default (see [`security`]): it binds 127.0.0.1; another address needs a token;
//! every action is a POST with a CSRF token and an Origin check; every value is escaped; a bad
//! request gets an error page and changes nothing.

mod assets;
mod data;
mod form;
mod live;
mod pages;
mod routes;
mod security;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use flow_core::store::Store;

use crate::error::CliError;

/// How `flows serve` was asked to serve.
#[derive(Clone, Debug)]
pub struct Options {
    pub bind: IpAddr,
    pub port: u16,
    pub token: Option<String>,
}

/// What every request handler shares.
pub struct App {
    store: Arc<dyn Store>,
    token: Option<String>,
    /// This process's CSRF token: random, embedded in every form, required by every action.
    csrf: String,
    /// This process's session secret: the sign-in cookie's value, so the cookie never holds the
    /// token, and a restart signs everyone out.
    session: String,
    bound: SocketAddr,
}

/// Serves the dashboard until interrupted (Ctrl-C or SIGTERM). Prints `listening on
/// http://ADDR/` on standard output once it accepts connections.
pub async fn run(store: Arc<dyn Store>, options: Options) -> Result<(), CliError> {
    security::check_bind(options.bind, options.token.as_deref()).map_err(CliError::other)?;
    let addr = SocketAddr::new(options.bind, options.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CliError::other(format!("cannot listen on {addr}: {e}; pick another --port (0 picks a free one)"))
    })?;
    let bound = listener.local_addr().map_err(|e| CliError::other(format!("cannot read the bound address: {e}")))?;
    let app = Arc::new(App {
        store,
        token: options.token,
        csrf: security::random_secret(),
        session: security::random_secret(),
        bound,
    });

    let shown = match bound.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", bound.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", bound.port()),
    };
    let mut stdout = std::io::stdout().lock();
    // The address is how a caller (a person or a test that passed --port 0) finds the server.
    let _ = writeln!(stdout, "listening on http://{shown}/").and_then(|()| stdout.flush());
    drop(stdout);

    // Not a graceful shutdown: open event streams never end on their own, and every action is
    // one store call that either happened or did not.
    tokio::select! {
        served = axum::serve(listener, routes::router(app)) => {
            served.map_err(|e| CliError::other(format!("the server stopped: {e}")))
        }
        () = stopped() => Ok(()),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
