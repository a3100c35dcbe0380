//! Test fixtures shared by every integration test: real PostgreSQL
//! processes, a real monitor process, unique ports and directories.
//!
//! Every test gets its own directory under /tmp (short, so Unix socket
//! paths fit, and traversable by the unprivileged OS user PostgreSQL runs
//! as when the tests run as root) and its own ports. Directories are kept
//! when a test fails, for the post-mortem, and removed when it passes.
#![allow(dead_code)]

pub mod bench;
pub mod http;
pub mod netns;
pub mod writer;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgpilot_pgproc::{self as pgproc, OsUser, PgBin, PostgresHandle, ShutdownMode, StartOptions};

/// The pgpilot binary under test.
pub fn pgpilot_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgpilot")
}

/// A port nobody listens on right now, and never handed out before in
/// this test process: parallel tests each take several (PostgreSQL, gRPC,
/// HTTP), and the kernel may give a just-closed ephemeral port out again
/// (a monitor's HTTP port was once taken by another test's).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh free port in 1000 tries")
}

/// A per-test directory, removed on success and kept on failure.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgpilot-{name}-"))
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        TestDir { path: dir }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: its files are kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Monitors started by this test process, by URI: their directory (for
/// the CA and the operator credential).
static MONITORS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// The environment a CLI command needs to reach `uri` as the operator
/// (PGPILOT_CA_FILE, PGPILOT_TOKEN_FILE) when it is a test monitor.
pub fn operator_env(uri: &str) -> Vec<(&'static str, PathBuf)> {
    let monitors = MONITORS.lock().unwrap();
    let Some((_, pgdata)) = monitors.iter().find(|(u, _)| u == uri) else {
        return Vec::new();
    };
    vec![
        ("PGPILOT_CA_FILE", pgpilot_monitor::tls::ca_path(pgdata)),
        (
            "PGPILOT_TOKEN_FILE",
            pgpilot_monitor::auth::operator_token_path(pgdata),
        ),
    ]
}

/// Runs `pgpilot ARGS` to completion. With `--monitor URI` of a test
/// monitor, as its operator: the CA and credential are passed in the
/// environment, as an operator would set them.
pub fn pgpilot(args: &[&str]) -> Output {
    pgpilot_command(args).output().expect("run pgpilot")
}

/// The command [`pgpilot`] runs, for callers that spawn it themselves.
pub fn pgpilot_command(args: &[&str]) -> Command {
    let env = args
        .iter()
        .position(|a| *a == "--monitor")
        .and_then(|i| args.get(i + 1))
        .map(|uri| operator_env(uri))
        .unwrap_or_default();
    let mut cmd = Command::new(pgpilot_bin());
    cmd.args(args)
        .envs(env)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// Runs `pgpilot ARGS`, asserts success, returns stdout.
pub fn pgpilot_ok(args: &[&str]) -> String {
    let out = pgpilot(args);
    assert!(
        out.status.success(),
        "pgpilot {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A monitor process: `pgpilot create monitor --run` in a test directory.
pub struct MonitorProc {
    pub child: Child,
    pub port: u16,
    /// Where its `/metrics` listens (127.0.0.1).
    pub http_port: u16,
    pub pgdata: PathBuf,
    pub uri: String,
    log: PathBuf,
    /// The network namespace it runs in (the fault suite), if any.
    host: Option<netns::Host>,
}

impl MonitorProc {
    pub async fn start(dir: &TestDir) -> MonitorProc {
        Self::start_on(dir, None).await
    }

    /// [`MonitorProc::start`] in `host`'s network namespace, listening on
    /// its address.
    pub async fn start_on(dir: &TestDir, host: Option<&netns::Host>) -> MonitorProc {
        Self::start_full(dir, host, &[]).await
    }

    /// [`MonitorProc::start`] with more `create monitor` flags.
    pub async fn start_with(dir: &TestDir, extra: &[&str]) -> MonitorProc {
        Self::start_full(dir, None, extra).await
    }

    async fn start_full(dir: &TestDir, host: Option<&netns::Host>, extra: &[&str]) -> MonitorProc {
        let pgdata = dir.join("monitor");
        let port = free_port();
        let http_port = free_port();
        let log = dir.join("monitor.log");
        let ip = netns::ip(host);
        let listen = format!("{ip}:{port}");
        let http_listen = format!("{ip}:{http_port}");
        let child = netns::command(host, pgpilot_bin())
            .args([
                "create",
                "monitor",
                "--pgdata",
                pgdata.to_str().unwrap(),
                "--listen",
                &listen,
                "--http-listen",
                &http_listen,
                "--run",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("monitor.err")).unwrap())
            .spawn()
            .expect("spawn the monitor");
        let uri = format!("https://{ip}:{port}");
        MONITORS.lock().unwrap().push((uri.clone(), pgdata.clone()));
        let mut m = MonitorProc {
            child,
            port,
            http_port,
            pgdata,
            uri,
            log,
            host: host.cloned(),
        };
        m.wait_ready().await;
        m
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("monitor exited early with {status}: {}", self.stderr());
            }
            // The credentials exist once `create monitor` is done.
            if let Ok(auth) = self.try_auth() {
                if pgpilot_proto::client::connect(&self.uri, &auth)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "monitor not ready in 90 s: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_file_name("monitor.err")).unwrap_or_default()
    }

    /// Everything the monitor logged so far (stdout and stderr).
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default() + &self.stderr()
    }

    /// The operator's CA and credential, as the monitor's files hold them.
    pub fn auth(&self) -> pgpilot_proto::client::ClientAuth {
        self.try_auth()
            .expect("read the monitor's CA and operator credential")
    }

    fn try_auth(&self) -> anyhow::Result<pgpilot_proto::client::ClientAuth> {
        Ok(pgpilot_proto::client::ClientAuth {
            ca_pem: Some(pgpilot_monitor::tls::ca_pem(&self.pgdata)?),
            token: Some(
                pgpilot_monitor::auth::read_token(&pgpilot_monitor::auth::operator_token_path(
                    &self.pgdata,
                ))?
                .token(),
            ),
        })
    }

    /// The formation's join token, as `show join-token` prints it.
    pub fn join_token(&self) -> String {
        std::fs::read_to_string(pgpilot_monitor::auth::join_token_path(&self.pgdata))
            .unwrap()
            .trim()
            .to_string()
    }

    /// An operator's client.
    pub async fn client(&self) -> pgpilot_proto::client::Client {
        pgpilot_proto::client::connect(&self.uri, &self.auth())
            .await
            .unwrap()
    }

    /// Starts the stopped monitor again (`pgpilot run`, same port and data).
    pub async fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let err = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log.with_file_name("monitor.err"))
            .unwrap();
        self.child = netns::command(self.host.as_ref(), pgpilot_bin())
            .args(["run", "--pgdata", path_str(&self.pgdata)])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("restart the monitor");
        self.wait_ready().await;
    }

    /// How many of the latest 1000 events mention `text`.
    pub async fn count_events(&self, text: &str) -> usize {
        self.events()
            .await
            .iter()
            .filter(|e| e.contains(text))
            .count()
    }

    /// The descriptions of the latest 1000 events.
    pub async fn events(&self) -> Vec<String> {
        self.client()
            .await
            .show_events(pgpilot_proto::pb::ShowEventsRequest {
                formation: String::new(),
                count: 1000,
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .into_iter()
            .map(|e| e.description)
            .collect()
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_child(&mut self.child, Duration::from_secs(60))
    }
}

impl Drop for MonitorProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// A plain real PostgreSQL listening on 127.0.0.1, standing in for a data
/// node's Postgres where a test drives the keeper protocol by hand.
pub struct NodePg {
    pub bin: PgBin,
    pub runner: Option<OsUser>,
    pub pgdata: PathBuf,
    pub port: u16,
    pub handle: Option<PostgresHandle>,
    socket_dir: PathBuf,
}

impl NodePg {
    pub async fn create(dir: &TestDir, name: &str) -> NodePg {
        let bin = PgBin::discover().expect("PostgreSQL binaries");
        let runner = pgproc::postgres_runner(None).unwrap();
        let pgdata = dir.join(name);
        let opts = pgproc::InitdbOptions {
            superuser: "postgres".into(),
            auth_local: "trust".into(),
            auth_host: "scram-sha-256".into(),
            data_checksums: false,
            no_sync: true,
        };
        pgproc::initdb(&bin, &runner, &pgdata, &opts).await.unwrap();
        let socket_dir = dir.join(&format!("{name}.sock"));
        std::fs::create_dir_all(&socket_dir).unwrap();
        pgproc::chown_dir(&runner, &socket_dir, false).unwrap();
        let mut node = NodePg {
            bin,
            runner,
            pgdata,
            port: free_port(),
            handle: None,
            socket_dir,
        };
        node.start().await;
        node
    }

    pub async fn start(&mut self) {
        let opts = StartOptions {
            port: self.port,
            socket_dir: self.socket_dir.clone(),
            listen_addresses: "127.0.0.1".into(),
            settings: vec![("fsync".into(), "off".into())],
            tag: self
                .pgdata
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            ready_timeout: Duration::from_secs(60),
            lifetime: pgproc::Lifetime::DiesWithUs,
        };
        self.handle = Some(
            PostgresHandle::start(&self.bin, &self.runner, &self.pgdata, &opts)
                .await
                .unwrap(),
        );
    }

    /// Immediate shutdown (SIGQUIT): Postgres stops at once, without a
    /// checkpoint, as in a crash, and its port closes.
    pub async fn crash(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop(ShutdownMode::Immediate, Duration::from_secs(10))
                .await
                .unwrap();
        }
    }

    /// Fast shutdown.
    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop(ShutdownMode::Fast, Duration::from_secs(30))
                .await
                .unwrap();
        }
    }

    /// Runs one statement as the superuser over the Unix socket.
    pub async fn execute(&self, sql: &str) {
        use sqlx::ConnectOptions;
        let mut c = sqlx::postgres::PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(self.port)
            .username("postgres")
            .database("postgres")
            .connect()
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }

    pub async fn system_identifier(&self) -> u64 {
        pgproc::controldata(&self.bin, &self.runner, &self.pgdata)
            .await
            .unwrap()
            .system_identifier
    }
}

/// Waits for a child to exit, killing it and failing after `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pids whose parent is `parent` (a postmaster's backends and
/// auxiliary processes).
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // "pid (comm) state ppid ...": comm may hold spaces, so split
            // after its closing parenthesis.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A keeper process: `pgpilot create postgres --run` (or `pgpilot run`)
/// for a node in a test directory, logging to `<name>.log`.
pub struct KeeperProc {
    pub child: Option<Child>,
    pub name: String,
    pub pgdata: PathBuf,
    pub port: u16,
    pub monitor: String,
    log: PathBuf,
    /// The network namespace it runs in (the fault suite), if any.
    host: Option<netns::Host>,
}

impl KeeperProc {
    /// The arguments of `create postgres` for a node named `name`, its
    /// HTTP endpoints on a free port of their own (see
    /// [`KeeperProc::http_port`]).
    pub fn create_args(dir: &TestDir, monitor: &str, name: &str, port: u16) -> Vec<String> {
        let http_listen = format!("127.0.0.1:{}", free_port());
        [
            "create",
            "postgres",
            "--pgdata",
            path_str(&dir.join(name)),
            "--monitor",
            monitor,
            "--pgport",
            &port.to_string(),
            "--hostname",
            "127.0.0.1",
            "--listen-addresses",
            "127.0.0.1",
            "--name",
            name,
            "--http-listen",
            &http_listen,
            // The join token of the test's monitor (always DIR/monitor),
            // from its file: nothing secret on the command line.
            "--join-token-file",
            path_str(&pgpilot_monitor::auth::join_token_path(
                &dir.join("monitor"),
            )),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts `create postgres --run` for a new node.
    pub fn create(dir: &TestDir, monitor: &str, name: &str) -> KeeperProc {
        Self::create_with(dir, monitor, name, &[])
    }

    /// [`KeeperProc::create`] with more `create postgres` arguments.
    pub fn create_with(dir: &TestDir, monitor: &str, name: &str, extra: &[&str]) -> KeeperProc {
        Self::create_on(dir, monitor, name, None, extra)
    }

    /// [`KeeperProc::create_with`] in `host`'s network namespace, its
    /// PostgreSQL and HTTP endpoints on its address.
    pub fn create_on(
        dir: &TestDir,
        monitor: &str,
        name: &str,
        host: Option<&netns::Host>,
        extra: &[&str],
    ) -> KeeperProc {
        let port = free_port();
        let mut k = KeeperProc {
            child: None,
            name: name.to_string(),
            pgdata: dir.join(name),
            port,
            monitor: monitor.to_string(),
            log: dir.join(&format!("{name}.log")),
            host: host.cloned(),
        };
        let mut args = Self::create_args(dir, monitor, name, port);
        if let Some(h) = host {
            netns::place_keeper_args(&mut args, h);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push("--run".into());
        k.spawn(&args);
        k
    }

    fn spawn(&mut self, args: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = netns::command(self.host.as_ref(), pgpilot_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn a keeper");
        self.child = Some(child);
    }

    /// `pgpilot run --pgdata` for this node (after a stop or kill).
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "{} still runs", self.name);
        let args = ["run", "--pgdata", path_str(&self.pgdata)].map(String::from);
        self.spawn(&args);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port of the node's HTTP endpoints, from its keeper.toml.
    pub fn http_port(&self) -> u16 {
        let path = pgpilot_keeper::files::config_path(&self.pgdata);
        let text = std::fs::read_to_string(&path).unwrap();
        let config: pgpilot_keeper::config::KeeperConfig = toml::from_str(&text).unwrap();
        match config.http_listen().unwrap() {
            pgpilot_proto::HttpListen::At { port, .. } => port,
            pgpilot_proto::HttpListen::Off => panic!("{}: http_listen is off", self.name),
        }
    }

    /// The pid of this node's postmaster, if postmaster.pid names a live one.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        alive.then_some(pid)
    }

    /// SIGKILL the keeper and its postmaster: the node dies at once.
    pub fn kill9(&mut self) {
        let pg = self.postmaster_pid();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = pg {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// SIGKILL the keeper only. Its PostgreSQL keeps running (unless the
    /// node was created with --postgres-dies-with-keeper), for the next
    /// `run` to adopt; drop stops it if none does.
    pub fn kill_keeper(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("the keeper runs");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_child(&mut c, Duration::from_secs(90))
    }

    /// The keeper's state file.
    pub fn state(&self) -> serde_json::Value {
        let path = pgpilot_keeper::files::state_path(&self.pgdata);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|_| "null".into()))
            .unwrap_or(serde_json::Value::Null)
    }

    /// A superuser connection over the node's private socket.
    pub async fn connect(&self) -> Result<sqlx::PgConnection, sqlx::Error> {
        use sqlx::ConnectOptions;
        sqlx::postgres::PgConnectOptions::new()
            .socket(pgpilot_keeper::files::socket_dir(&self.pgdata))
            .port(self.port)
            .username("postgres")
            .database("postgres")
            .connect()
            .await
    }

    /// Runs `sql` and returns the first column of the first row as text.
    pub async fn query(&self, sql: &str) -> Result<Option<String>, sqlx::Error> {
        let mut c = self.connect().await?;
        sqlx::query_scalar::<_, Option<String>>(sql)
            .fetch_optional(&mut c)
            .await
            .map(|r| r.flatten())
    }
}

impl Drop for KeeperProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // PostgreSQL outlives a keeper killed by the test (or one that
        // failed to stop it): nothing may leak from a test.
        if let pgproc::Found::Running(pm) = pgproc::find_postmaster(&self.pgdata) {
            use nix::sys::signal::Signal;
            pm.signal(Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while pm.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            pm.signal(Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, tail(&self.log(), 60));
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// (reported, assigned) of every node, by name, from `show state`.
pub async fn node_states(
    client: &mut pgpilot_proto::client::Client,
) -> std::collections::BTreeMap<String, (String, String)> {
    use pgpilot_proto::NodeState;
    let name = |v: i32| NodeState::from_wire(v).map_or("?".into(), |s| s.name().to_string());
    client
        .show_state(pgpilot_proto::pb::ShowStateRequest::default())
        .await
        .map(|r| {
            r.into_inner()
                .nodes
                .into_iter()
                .map(|n| (n.name, (name(n.reported_state), name(n.assigned_state))))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until node `name` is in `state` (reported and assigned).
pub async fn wait_state(monitor: &MonitorProc, name: &str, state: &str, timeout: Duration) {
    let mut client = monitor.client().await;
    let want = (state.to_string(), state.to_string());
    let what = format!("{name} in {state}");
    eventually(&what, timeout, || {
        let mut client = client.clone();
        let want = want.clone();
        let name = name.to_string();
        async move { (node_states(&mut client).await.get(&name) == Some(&want)).then_some(()) }
    })
    .await;
    let _ = &mut client;
}

/// A primary "a" and its secondary "b", both keepers running.
pub async fn primary_and_secondary(
    dir: &TestDir,
    monitor: &MonitorProc,
) -> (KeeperProc, KeeperProc) {
    let step = Duration::from_secs(60);
    let a = KeeperProc::create(dir, &monitor.uri, "a");
    wait_state(monitor, "a", "single", step).await;
    let b = KeeperProc::create(dir, &monitor.uri, "b");
    wait_state(monitor, "b", "secondary", step).await;
    wait_state(monitor, "a", "primary", step).await;
    (a, b)
}

/// A primary "a" with two secondaries "b" and "c", both in
/// synchronous_standby_names, all keepers running.
pub async fn primary_and_two_secondaries(
    dir: &TestDir,
    monitor: &MonitorProc,
) -> (KeeperProc, KeeperProc, KeeperProc) {
    let step = Duration::from_secs(60);
    let a = KeeperProc::create(dir, &monitor.uri, "a");
    wait_state(monitor, "a", "single", step).await;
    let b = KeeperProc::create(dir, &monitor.uri, "b");
    wait_state(monitor, "b", "secondary", step).await;
    let c = KeeperProc::create(dir, &monitor.uri, "c");
    wait_state(monitor, "c", "secondary", step).await;
    wait_state(monitor, "a", "primary", step).await;
    eventually(
        "both standbys in synchronous_standby_names",
        step,
        || async {
            (a.query("SHOW synchronous_standby_names")
                .await
                .ok()
                .flatten()
                .as_deref()
                == Some("ANY 1 (pgpilot_node_2, pgpilot_node_3)"))
            .then_some(())
        },
    )
    .await;
    (a, b, c)
}

/// Creates table `acked` on `primary` and commits rows 1..=n, one
/// transaction each (each acknowledged by a synchronous standby).
pub async fn commit_rows(primary: &KeeperProc, n: u32) {
    primary.query("CREATE TABLE acked (i int)").await.unwrap();
    for i in 1..=n {
        primary
            .query(&format!("INSERT INTO acked VALUES ({i})"))
            .await
            .unwrap();
    }
}

/// Waits until one of `candidates` is writable (wait_primary or primary,
/// reached) and returns its index.
pub async fn new_primary_among(
    monitor: &MonitorProc,
    candidates: &[&KeeperProc],
    timeout: Duration,
) -> usize {
    eventually("a new primary", timeout, || async {
        let states = node_states(&mut monitor.client().await).await;
        candidates.iter().position(|k| {
            states
                .get(&k.name)
                .is_some_and(|(r, g)| r == g && (r == "wait_primary" || r == "primary"))
        })
    })
    .await
}

/// Processes stopped with SIGSTOP; every one still stopped is continued on
/// drop, also when the test fails, so that the keepers can stop them.
#[derive(Default)]
pub struct Frozen(Vec<i32>);

impl Frozen {
    pub fn stop(&mut self, pid: i32) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP");
        self.0.push(pid);
    }

    pub fn resume(&mut self, pid: i32) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGCONT,
        )
        .expect("SIGCONT");
        self.0.retain(|p| *p != pid);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in self.0.drain(..) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

/// Freezes `standby`'s WAL receiver (into `frozen`) and waits until
/// `primary`'s walsender gave up on it (wal_sender_timeout): nothing
/// committed from then on is even on its way to `standby`. Returns the
/// receiver's pid, to resume it.
pub async fn freeze_wal_receiver(
    standby: &KeeperProc,
    primary: &KeeperProc,
    frozen: &mut Frozen,
) -> i32 {
    let receiver: i32 = standby
        .query("SELECT pid::text FROM pg_stat_wal_receiver")
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{}'s WAL receiver runs", standby.name))
        .parse()
        .unwrap();
    frozen.stop(receiver);
    let id = standby.state()["node_id"].as_i64().expect("node id");
    let sender = format!(
        "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = '{}'",
        pgpilot_proto::node_slot_name(id)
    );
    eventually(
        "the primary lets the WAL receiver go",
        Duration::from_secs(60),
        || async {
            (primary.query(&sender).await.ok().flatten().as_deref() == Some("0")).then_some(())
        },
    )
    .await;
    receiver
}
