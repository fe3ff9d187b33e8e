//! A PostgreSQL server for the tests, and a fresh schema per test.
//!
//! The server is, in order: `$DATABASE_URL` when set; else the one on 127.0.0.1:5432 when it
//! answers (as `postgres://postgres@127.0.0.1:5432/test`); else a throwaway cluster started from
//! the installed server binaries (`/usr/lib/postgresql/*/bin`) in a temporary directory on a
//! free port, as the `postgres` user when running as root, stopped and removed when the test
//! process ends. When none of these works a test says why and passes without running, except
//! under `CI=true`, where it fails: CI must never skip the PostgreSQL tests.
//!
//! Each test gets its own schema (`flows_test_<uuid>`) through the connections' `search_path`,
//! so tests run in parallel on one database; the schema is dropped when the test's [`TestDb`]
//! is.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use flow_core::store::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use flow_core::store::tokio_postgres::{self, Config, NoTls};

const LOCAL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server's URL, or why there is none; found once per test process.
fn server() -> &'static Result<String, String> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            return Ok(url);
        }
        let local: SocketAddr = ([127, 0, 0, 1], 5432).into();
        if TcpStream::connect_timeout(&local, Duration::from_secs(2)).is_ok() {
            return Ok(LOCAL.to_string());
        }
        start_cluster().map_err(|why| {
            format!("DATABASE_URL is not set, nothing answers on 127.0.0.1:5432, and no throwaway cluster: {why}")
        })
    })
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `cmd` as the `postgres` user when this process is root (the server refuses to run as root).
fn as_server_user(program: &Path, root: bool) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A throwaway cluster in a temporary directory, started from the installed server binaries,
/// stopped and removed once this process is gone (however it ends).
pub struct Cluster {
    /// Its URL (the `postgres` database as the `postgres` user).
    pub url: String,
    pg_ctl: PathBuf,
    data: PathBuf,
    log: PathBuf,
    root: bool,
}

impl Cluster {
    /// Starts one on a free port, from Debian's server binaries.
    pub fn start() -> Result<Cluster, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no server binaries in /usr/lib/postgresql ({e}); install Debian's `postgresql`"))?
            .filter_map(|d| d.ok().map(|d| d.path().join("bin")))
            .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
            .max()
            .ok_or("no initdb and pg_ctl under /usr/lib/postgresql/*/bin; install Debian's `postgresql`")?;
        Cluster::start_from(&bin)
    }

    /// Starts one on a free port, from the server binaries in `bin`.
    pub fn start_from(bin: &Path) -> Result<Cluster, String> {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let dir: PathBuf = std::env::temp_dir().join(format!("flows-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if root {
            run(Command::new("chown").arg("postgres:").arg(&dir)).map_err(|e| {
                format!("running as root, the cluster must belong to the `postgres` user, and chown failed: {e}")
            })?;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        let data = dir.join("data");
        run(as_server_user(&bin.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdin(Stdio::null()))?;
        let conf = format!(
            "port = {port}\nunix_socket_directories = '{}'\nlisten_addresses = '127.0.0.1'\nfsync = off\nmax_connections = 200\n",
            dir.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .map_err(|e| format!("cannot configure the cluster: {e}"))?;
        let pg_ctl = bin.join("pg_ctl");
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let cluster = Cluster { url, pg_ctl, data, log: dir.join("log"), root };
        cluster.ctl(&["-w", "start"])?;
        // Stops the cluster and removes it once this process is gone, however it ends.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runuser}{pg_ctl} -D {data} stop -m immediate; rm -rf {dir}",
            pid = std::process::id(),
            runuser = if root { "runuser -u postgres -- " } else { "" },
            pg_ctl = cluster.pg_ctl.display(),
            data = cluster.data.display(),
            dir = dir.display(),
        );
        Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the cluster's reaper: {e}"))?;
        Ok(cluster)
    }

    fn ctl(&self, args: &[&str]) -> Result<(), String> {
        // The server's output goes to the log: a pipe it held open would keep `run` waiting.
        run(as_server_user(&self.pg_ctl, self.root)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(args)
            .stdin(Stdio::null()))
    }

    /// Restarts the server as a crash would: `pg_ctl restart -m immediate` (no checkpoint, every
    /// connection cut), waiting until it accepts connections again.
    #[allow(dead_code, reason = "only the chaos test restarts its server; the other tests share this module")]
    pub fn restart(&self) -> Result<(), String> {
        self.ctl(&["-m", "immediate", "-w", "restart"])
    }
}

/// Starts a cluster in a temporary directory; returns its URL.
fn start_cluster() -> Result<String, String> {
    Cluster::start().map(|c| c.url)
}

/// A server with the pgvector extension available (not installed: each test's database starts
/// without it), found once per test process: `$FLOWS_PGVECTOR_URL` when set (a superuser's
/// `postgres://` URL), else a throwaway cluster from the binaries `.ci/pgvector` unpacks
/// (`$FLOWS_PGVECTOR_BIN`, by default under the temporary directory). Debian 12 packages no
/// pgvector, so the script takes PostgreSQL with pgvector built in from PyPI's `pgserver` wheel.
fn pgvector_server() -> &'static Result<String, String> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Some(url) = std::env::var("FLOWS_PGVECTOR_URL").ok().filter(|u| !u.is_empty()) {
            return Ok(url);
        }
        let bin = std::env::var_os("FLOWS_PGVECTOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("flows-pgvector/pgserver/pginstall/bin"));
        if !bin.join("pg_ctl").is_file() {
            return Err(format!(
                "FLOWS_PGVECTOR_URL is not set and there are no server binaries with pgvector in {}: run \
                 `.ci/pgvector` (it unpacks them from PyPI), or set FLOWS_PGVECTOR_URL to a server that has the \
                 extension",
                bin.display()
            ));
        }
        Cluster::start_from(&bin).map(|c| c.url)
    })
}

/// A schema of its own on the test server.
pub struct TestDb {
    url: String,
    /// The schema every pool from [`TestDb::pool`] works in.
    pub schema: String,
    /// The database made for this test alone, dropped with it (`None`: a schema of the shared
    /// database), and the URL to drop it from.
    own_database: Option<(String, String)>,
}

/// Under `CI=true`, fails with `why`; elsewhere says that `test` is skipped and why.
fn unavailable(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: PostgreSQL tests never skip under CI=true, and {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The test's database, or `None` (after saying why) when no server can be had outside CI.
///
/// # Panics
///
/// Under `CI=true` when no server can be had, and when the server refuses the schema.
pub async fn database(test: &str) -> Option<TestDb> {
    let url = match server() {
        Ok(url) => url.clone(),
        Err(why) => {
            unavailable(test, why);
            return None;
        }
    };
    schema_in(test, url, None).await
}

/// A database of its own on the pgvector server ([`pgvector_server`]), without the extension
/// installed, and a schema in it; `None` (after saying why) when there is no such server
/// outside CI.
///
/// # Panics
///
/// Under `CI=true` when no server can be had, and when the server refuses the database.
#[allow(dead_code, reason = "only the pgvector tests use it; not every test crate including this module does")]
pub async fn pgvector_database(test: &str) -> Option<TestDb> {
    let server = match pgvector_server() {
        Ok(url) => url.clone(),
        Err(why) => {
            unavailable(test, why);
            return None;
        }
    };
    let name = format!("flows_vec_{}", uuid::Uuid::new_v4().simple());
    let admin = admin(&server).await.unwrap_or_else(|e| panic!("{test}: cannot connect to {server}: {e}"));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("{test}: cannot create database {name}: {e}"));
    // The server's URL with this database instead of its own.
    let base = server.split('?').next().unwrap_or(&server);
    let url = match base.rsplit_once('/') {
        Some((host, _)) if host.contains("://") => format!("{host}/{name}"),
        _ => panic!("{test}: FLOWS_PGVECTOR_URL must be a postgres://user@host:port/database URL, not {server}"),
    };
    schema_in(test, url, Some((server, name))).await
}

async fn schema_in(test: &str, url: String, own_database: Option<(String, String)>) -> Option<TestDb> {
    let schema = format!("flows_test_{}", uuid::Uuid::new_v4().simple());
    let admin = admin(&url).await.unwrap_or_else(|e| {
        panic!("{test}: cannot connect to {url}: {e}; set DATABASE_URL to a server and database this user may use")
    });
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap_or_else(|e| panic!("{test}: cannot create schema {schema}: {e}"));
    Some(TestDb { url, schema, own_database })
}

/// A plain connection to the server, outside any pool.
async fn admin(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; its error then is of no interest.
        let _ = connection.await;
    });
    Ok(client)
}

impl TestDb {
    /// The connection settings of this test's schema.
    pub fn config(&self) -> Config {
        #[allow(clippy::expect_used, reason = "the URL connected once already")]
        let mut config: Config = self.url.parse().expect("the server URL parses");
        config.options(format!("-c search_path={}", self.schema));
        config.application_name(&self.schema);
        config
    }

    /// A connection URL that reaches this test's schema, for a program that takes a URL (the
    /// `flows` binary): the server's URL with the `search_path` in its `options` parameter.
    #[allow(dead_code, reason = "the flows-cli tests use it; not every test crate including this module does")]
    pub fn url(&self) -> String {
        let options = format!("-c search_path={}", self.schema);
        if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            let separator = if self.url.contains('?') { '&' } else { '?' };
            format!("{}{separator}options={}", self.url, options.replace(' ', "%20").replace('=', "%3D"))
        } else {
            format!("{} options='{options}'", self.url)
        }
    }

    /// A new pool of up to `size` connections to this test's schema.
    pub fn pool(&self, size: usize) -> Pool {
        let manager =
            Manager::from_config(self.config(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        #[allow(clippy::expect_used, reason = "a pool without timeouts always builds")]
        Pool::builder(manager).max_size(size).build().expect("the pool builds")
    }

    /// A connection outside any pool, in this test's schema.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.config().connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Ends every connection of this test's pools from the server's side, as a restart does.
    #[allow(dead_code, reason = "not every test crate including this module restarts connections")]
    pub async fn terminate_connections(&self) -> Result<u64, tokio_postgres::Error> {
        let admin = admin(&self.url).await?;
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 \
                 AND pid <> pg_backend_pid()",
                &[&self.schema],
            )
            .await?;
        Ok(rows.len() as u64)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any runtime's async context (or during a panic), so the schema is
        // dropped from a thread with a runtime of its own.
        let (url, sql) = match &self.own_database {
            Some((server, name)) => (server.clone(), format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
            None => (self.url.clone(), format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)),
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let admin = admin(&url).await.ok()?;
                admin.batch_execute(&sql).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the test schema {} (or its database); drop it by hand", self.schema);
        }
    }
}
