//! pgproc against real PostgreSQL: initdb, start, connect, stop, failures.

use std::path::PathBuf;
use std::time::Duration;

use pgpilot_pgproc::*;

fn test_dir(name: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(&format!("pgproc-{name}-"))
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn opts() -> InitdbOptions {
    InitdbOptions {
        superuser: "postgres".into(),
        auth_local: "trust".into(),
        auth_host: "reject".into(),
        data_checksums: true,
        no_sync: true,
    }
}

fn start_opts(dir: &std::path::Path, port: u16) -> StartOptions {
    StartOptions {
        port,
        socket_dir: dir.to_path_buf(),
        listen_addresses: "127.0.0.1".into(),
        settings: vec![("fsync".into(), "off".into())],
        tag: "test".into(),
        ready_timeout: Duration::from_secs(60),
        lifetime: Lifetime::DiesWithUs,
    }
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Alive and not a zombie: a detached server is still our child, and tokio
/// reaps it only some time after it exited.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

#[tokio::test]
async fn initdb_start_query_stop() {
    let dir = test_dir("lifecycle");
    let bin = PgBin::discover().unwrap();
    let runner = postgres_runner(None).unwrap();
    let pgdata = dir.join("data");
    initdb(&bin, &runner, &pgdata, &opts()).await.unwrap();
    assert!(is_pgdata(&pgdata));
    let cd = controldata(&bin, &runner, &pgdata).await.unwrap();
    assert_ne!(cd.system_identifier, 0);
    assert_eq!(cd.state, "shut down");

    // initdb refuses a directory that holds something.
    let e = initdb(&bin, &runner, &pgdata, &opts()).await.unwrap_err();
    assert!(matches!(e, Error::NotEmpty(_)), "{e}");

    chown_dir(&runner, &dir, false).unwrap();
    let port = free_port();
    let pg = PostgresHandle::start(&bin, &runner, &pgdata, &start_opts(&dir, port))
        .await
        .unwrap();
    let out = PgCommand::new(&bin, "psql")
        .user(&runner)
        .args([
            "-h",
            dir.to_str().unwrap(),
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-Atc", "select 1"])
        .run()
        .await
        .unwrap();
    assert_eq!(out.stdout.trim(), "1");
    assert!(
        pg.log_tail()
            .iter()
            .any(|l| l.contains("database system is ready to accept connections")),
        "{:?}",
        pg.log_tail()
    );
    let pid = pg.pid();
    let status = pg
        .stop(ShutdownMode::Fast, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!alive(pid));
    assert_eq!(
        controldata(&bin, &runner, &pgdata).await.unwrap().state,
        "shut down"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn start_failures_are_clear_and_leave_nothing_running() {
    let dir = test_dir("failures");
    let bin = PgBin::discover().unwrap();
    let runner = postgres_runner(None).unwrap();
    let pgdata = dir.join("data");
    initdb(&bin, &runner, &pgdata, &opts()).await.unwrap();
    chown_dir(&runner, &dir, false).unwrap();

    // A bad setting: PostgreSQL's own complaint is in the error.
    let mut o = start_opts(&dir, free_port());
    o.settings
        .push(("shared_buffers".into(), "nonsense".into()));
    let e = PostgresHandle::start(&bin, &runner, &pgdata, &o)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("shared_buffers"), "{e}");

    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let o = start_opts(&dir, busy.local_addr().unwrap().port());
    let e = PostgresHandle::start(&bin, &runner, &pgdata, &o)
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("could not") || e.to_string().contains("in use"),
        "{e}"
    );
    drop(busy);

    // Dropping a running handle stops the server.
    let pg = PostgresHandle::start(&bin, &runner, &pgdata, &start_opts(&dir, free_port()))
        .await
        .unwrap();
    let pid = pg.pid();
    drop(pg);
    assert!(!alive(pid), "postmaster {pid} survived its handle");
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn psql(bin: &PgBin, runner: &Option<OsUser>, dir: &std::path::Path, port: u16, sql: &str) {
    PgCommand::new(bin, "psql")
        .user(runner)
        .args([
            "-h",
            dir.to_str().unwrap(),
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-Atc", sql])
        .run()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_server_that_outlives_its_handle_is_adopted_with_its_log() {
    let dir = test_dir("adopt");
    let bin = PgBin::discover().unwrap();
    let runner = postgres_runner(None).unwrap();
    let pgdata = dir.join("data");
    initdb(&bin, &runner, &pgdata, &opts()).await.unwrap();
    chown_dir(&runner, &dir, false).unwrap();
    let port = free_port();
    let fifo = dir.join("pg.log.fifo");
    let mut o = start_opts(&dir, port);
    o.lifetime = Lifetime::Outlives {
        log_fifo: fifo.clone(),
    };
    let pg = PostgresHandle::start(&bin, &runner, &pgdata, &o)
        .await
        .unwrap();
    // Readiness is seen through a connection; the log line may still be
    // on its way through the FIFO (a loaded machine once lagged it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pg
        .log_tail()
        .iter()
        .any(|l| l.contains("ready to accept connections"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the log comes through the FIFO: {:?}",
            pg.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = pg.detach();
    assert!(running(pid), "detached, the server runs on");
    // Its log forwarder is aborted: let it go before another reader comes.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Found, checked, adopted: same pid, and its log is forwarded again.
    let pm = match find_postmaster(&pgdata) {
        Found::Running(pm) => pm,
        other => panic!("{other:?}"),
    };
    assert_eq!(pm.pid(), pid as i32);
    assert_eq!(pm.file.port, Some(port));
    assert_eq!(pm.file.status.as_deref(), Some("ready"));
    let mut pg = PostgresHandle::adopt(pm, "test", Some(&fifo));
    assert!(pg.is_adopted());
    assert_eq!(pg.pid(), pid);
    assert!(pg.try_exit_status().unwrap().is_none());
    psql(&bin, &runner, &dir, port, "SELECT pg_reload_conf()").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pg
        .log_tail()
        .iter()
        .any(|l| l.contains("reloading configuration files"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload line through the FIFO after adoption: {:?}",
            pg.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit = pg
        .stop(ShutdownMode::Fast, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(exit, Exit::NotOurChild), "{exit}");
    assert!(!running(pid));
    assert_eq!(find_postmaster(&pgdata), Found::Nothing);
    assert_eq!(
        controldata(&bin, &runner, &pgdata).await.unwrap().state,
        "shut down"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
