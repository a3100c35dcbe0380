//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "pgpilot",
    version,
    about = "Automated failover and high availability for PostgreSQL"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PGPILOT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the largest variant (create
// postgres, with its SSL file paths) costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a monitor or a node.
    #[command(subcommand)]
    Create(Create),
    /// Run the monitor (or keeper) service of --pgdata until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Show the state of the cluster.
    #[command(subcommand)]
    Show(Show),
    /// Remove things from the cluster.
    #[command(subcommand)]
    Drop(Drop),
    /// Run an operation on a formation: a switchover or a promotion.
    #[command(subcommand)]
    Perform(Perform),
    /// Change a node or formation setting.
    #[command(subcommand)]
    Set(Set),
    /// Read a node or formation setting.
    #[command(subcommand)]
    Get(Get),
    /// Put a standby into maintenance: it leaves the synchronous set
    /// first, then its keeper neither restarts nor reconfigures its
    /// PostgreSQL until `disable maintenance`.
    #[command(subcommand)]
    Enable(Maintenance),
    /// End a standby's maintenance: it follows the primary again.
    #[command(subcommand)]
    Disable(Maintenance),
    /// Stop the keeper of --pgdata and its PostgreSQL (fast shutdown); with
    /// --keeper-only, the keeper alone.
    Stop(StopArgs),
    /// Run a local demo on loopback in a temporary directory until Ctrl-C.
    Demo(DemoArgs),
    /// A live view of the nodes, their states, health and lag, and the
    /// latest events, redrawn as the monitor's events come; q, Esc or
    /// Ctrl-C quits.
    Watch(WatchArgs),
    /// Read, change or check the monitor.toml or keeper.toml of --pgdata.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Replace a credential.
    #[command(subcommand)]
    Rotate(Rotate),
}

#[derive(Subcommand, Debug)]
pub enum Rotate {
    /// A new join token: the old one stops registering nodes at once;
    /// registered nodes are unaffected. Prints the new token.
    JoinToken {
        #[command(flatten)]
        target: Target,
    },
    /// A new password for the formation's replication role. The primary's
    /// keeper sets it on the role, then standbys switch to it (their
    /// streaming reconnects once) and new nodes get it; until then the
    /// old one keeps working. Never printed: the keepers fetch it.
    /// `pgpilot show settings` shows the generation in use.
    ReplicationPassword {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print one setting (secrets print as ***).
    Get {
        /// Data directory of the monitor or node.
        #[arg(long, env = "PGDATA")]
        pgdata: PathBuf,
        /// The key, as in the file (`timings.lease` for a monitor's
        /// timings).
        key: String,
    },
    /// Change one setting: the whole resulting file is validated as
    /// `pgpilot run` validates it, and written only if it passes. Says
    /// what the change takes to apply.
    Set {
        /// Data directory of the monitor or node.
        #[arg(long, env = "PGDATA")]
        pgdata: PathBuf,
        /// The key, as in the file.
        key: String,
        /// The new value (a duration as "2s", a rate as "50M", ...).
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Validate the file as `pgpilot run` does at start.
    Check {
        /// Data directory of the monitor or node.
        #[arg(long, env = "PGDATA")]
        pgdata: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory for the demo's files [default: a new directory under /tmp].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the demo's files after it stops.
    #[arg(long)]
    pub keep: bool,
    /// Number of PostgreSQL nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub nodes: u8,
    /// Log PostgreSQL's and the keepers' lines to stderr too [default:
    /// only to demo.log in the demo's directory].
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only this formation [default: every formation].
    #[arg(long)]
    pub formation: Option<String>,
    /// Print one frame as plain text and exit (for scripts, or where no
    /// terminal is).
    #[arg(long)]
    pub once: bool,
}

#[derive(Subcommand, Debug)]
pub enum Create {
    /// Create a monitor: its private PostgreSQL in --pgdata (or an existing
    /// database with --database-url) and its schema.
    Monitor(CreateMonitorArgs),
    /// Create a PostgreSQL node: register it with the monitor, then initdb
    /// (first node) or clone the primary (the others).
    Postgres(CreatePostgresArgs),
}

#[derive(Args, Debug)]
pub struct CreatePostgresArgs {
    /// Data directory: absent, empty, or (first node only) a stopped
    /// primary's. The keeper's files go in the sibling DIR.pgpilot.
    #[arg(long, env = "PGDATA")]
    pub pgdata: PathBuf,
    /// Monitor URI, as `pgpilot show uri` prints it.
    #[arg(long, env = "PGPILOT_MONITOR")]
    pub monitor: String,
    /// PostgreSQL port.
    #[arg(long, default_value_t = 5432)]
    pub pgport: u16,
    /// Address the monitor and other nodes reach this node at.
    #[arg(long, default_value = "localhost")]
    pub hostname: String,
    /// Node name [default: node_<id>].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "default")]
    pub formation: String,
    /// Database applications use (the formation's first node sets it).
    #[arg(long, default_value = "postgres")]
    pub dbname: String,
    /// Superuser created by initdb; the keeper connects as it. Use the same
    /// on every node of a formation.
    #[arg(long, default_value = "postgres")]
    pub username: String,
    /// 0..100; 0 means never promoted.
    #[arg(long, default_value_t = 50)]
    pub candidate_priority: i32,
    /// Whether this node counts for synchronous replication.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub replication_quorum: bool,
    /// Authentication over TCP for replication and applications: trust
    /// admits loopback addresses without a password (remote ones still
    /// need SCRAM); trust-remote admits every node's address without one.
    #[arg(long, value_enum, default_value_t = AuthArg::ScramSha256)]
    pub auth: AuthArg,
    /// PostgreSQL's listen_addresses.
    #[arg(long, default_value = "*")]
    pub listen_addresses: String,
    /// OS user that runs PostgreSQL when pgpilot runs as root (created if
    /// missing).
    #[arg(long, default_value = "postgres")]
    pub pg_user: String,
    /// Most pg_basebackup reads per second when this node copies the
    /// primary (`maximum_backup_rate` in keeper.toml): kilobytes, or with a
    /// suffix k or M; 32k..1024M.
    #[arg(long, default_value = pgpilot_keeper::config::DEFAULT_BACKUP_RATE)]
    pub maximum_backup_rate: String,
    /// Where the keeper's HTTP endpoints (/primary, /replica, /read-only,
    /// /sync, /health, /metrics) listen: HOST:PORT, or off
    /// (`http_listen` in keeper.toml) [default: --hostname at --pgport +
    /// 3000].
    #[arg(long)]
    pub http_listen: Option<pgpilot_proto::HttpListen>,
    /// PostgreSQL dies with its keeper (`postgres_dies_with_keeper` in
    /// keeper.toml), for those who prefer fencing to availability. Without
    /// it, PostgreSQL outlives a keeper that dies or is restarted, and the
    /// next keeper adopts it.
    #[arg(long)]
    pub postgres_dies_with_keeper: bool,
    /// The formation's join token (`pgpilot show join-token`), needed to
    /// register. Prefer the environment variable or --join-token-file: a
    /// flag's value shows in `ps` while the command runs.
    #[arg(long, env = "PGPILOT_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// A file holding the join token.
    #[arg(long, conflicts_with = "join_token")]
    pub join_token_file: Option<PathBuf>,
    /// The monitor's CA certificate (PEM) [default: fetched from the
    /// monitor and checked against the join token's fingerprint].
    #[arg(long, env = "PGPILOT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    // --- PostgreSQL SSL (issue #11): [ssl] in keeper.toml ---
    /// PostgreSQL's server certificate (PEM) [default: a self-signed one
    /// generated for --hostname].
    #[arg(long, requires = "ssl_key_file")]
    pub ssl_cert_file: Option<PathBuf>,
    /// The private key of --ssl-cert-file (PEM).
    #[arg(long, requires = "ssl_cert_file")]
    pub ssl_key_file: Option<PathBuf>,
    /// The CA that signed every node's certificate: connections to the
    /// other nodes then use sslmode=verify-full.
    #[arg(long, requires = "ssl_cert_file")]
    pub ssl_ca_file: Option<PathBuf>,
    // --- end of PostgreSQL SSL ---
    /// Continue as the keeper service once created.
    #[arg(long)]
    pub run: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AuthArg {
    #[value(name = "scram-sha-256")]
    ScramSha256,
    Trust,
    #[value(name = "trust-remote")]
    TrustRemote,
}

#[derive(Args, Debug)]
pub struct CreateMonitorArgs {
    /// Data directory of the monitor's private PostgreSQL. pgpilot's own
    /// files go in the sibling directory DIR.pgpilot.
    #[arg(long, env = "PGDATA")]
    pub pgdata: PathBuf,
    /// Address the monitor's gRPC API listens on.
    #[arg(long, default_value = "0.0.0.0:5430")]
    pub listen: SocketAddr,
    /// Host name keepers use to reach the monitor [default: the listen
    /// address, or this machine's host name when listening on all addresses].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Use this existing PostgreSQL database instead of a private one.
    #[arg(long, env = "PGPILOT_MONITOR_DATABASE_URL")]
    pub database_url: Option<String>,
    /// OS user that runs the private PostgreSQL when pgpilot runs as root
    /// (created if missing).
    #[arg(long, default_value = "postgres")]
    pub pg_user: String,
    /// Where the monitor's Prometheus /metrics listens: HOST:PORT, or off
    /// (`http_listen` in monitor.toml) [default: the --listen address at
    /// its port + 3000].
    #[arg(long)]
    pub http_listen: Option<pgpilot_proto::HttpListen>,
    /// No TLS on the gRPC API: credentials then cross the network in
    /// clear text. Only for a network you trust; `show uri` says so.
    #[arg(long, conflicts_with_all = ["ssl_ca_file", "server_cert", "server_key"])]
    pub no_ssl: bool,
    /// Your own CA certificate (PEM) instead of a private CA made here;
    /// with --server-cert and --server-key.
    #[arg(long, requires_all = ["server_cert", "server_key"])]
    pub ssl_ca_file: Option<PathBuf>,
    /// The monitor's certificate (PEM), signed by --ssl-ca-file, naming
    /// the host keepers use (--hostname).
    #[arg(long, requires_all = ["ssl_ca_file", "server_key"])]
    pub server_cert: Option<PathBuf>,
    /// The key of --server-cert (PEM).
    #[arg(long, requires_all = ["ssl_ca_file", "server_cert"])]
    pub server_key: Option<PathBuf>,
    /// Continue as the monitor service once created.
    #[arg(long)]
    pub run: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Data directory of the monitor or node to run.
    #[arg(long, env = "PGDATA")]
    pub pgdata: PathBuf,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Data directory of the monitor or node to stop.
    #[arg(long, env = "PGDATA")]
    pub pgdata: PathBuf,
    /// Stop only the node's keeper and leave PostgreSQL running, to
    /// restart the keeper (an upgrade): the next `pgpilot run` adopts it,
    /// without a restart, a failover or a failed write. Refused when
    /// keeper.toml sets postgres_dies_with_keeper.
    #[arg(long)]
    pub keeper_only: bool,
}

/// Which monitor a command talks to.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Monitor URI (http://HOST:PORT), as printed by `pgpilot show uri`.
    #[arg(long, env = "PGPILOT_MONITOR", conflicts_with = "pgdata")]
    pub monitor: Option<String>,
    /// Data directory of the monitor or of any node: its configuration
    /// names the monitor.
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    /// The monitor's CA certificate (PEM), to verify an https:// --monitor
    /// [default with --pgdata: the monitor's or node's own copy].
    #[arg(long, env = "PGPILOT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A file holding the credential to present (the operator, read or a
    /// node credential); the environment variable PGPILOT_TOKEN may hold
    /// the credential itself [default with --pgdata: the monitor's
    /// operator credential, or the node's own credential].
    #[arg(long, env = "PGPILOT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Show {
    /// Connection strings: the monitor's, and each formation's for applications.
    Uri {
        #[command(flatten)]
        target: Target,
        /// Only this formation.
        #[arg(long)]
        formation: Option<String>,
    },
    /// Nodes with their reported and assigned states.
    State {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        formation: Option<String>,
    },
    /// The latest events, oldest first.
    Events {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        formation: Option<String>,
        /// How many events.
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Formation, primary and node settings.
    Settings {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        formation: Option<String>,
    },
    /// A systemd unit (Type=notify, with a watchdog) for the monitor or
    /// node of --pgdata; no monitor is asked.
    Systemd {
        /// Data directory of the monitor or node.
        #[arg(long, env = "PGDATA")]
        pgdata: PathBuf,
        /// User= of the unit [default: the owner of DIR.pgpilot].
        #[arg(long)]
        user: Option<String>,
    },
    /// The formation's join token, read from the monitor's own files:
    /// `create postgres` needs it (PGPILOT_JOIN_TOKEN). It carries the
    /// monitor's CA fingerprint, so nothing else is needed to join.
    JoinToken {
        /// Data directory of the monitor.
        #[arg(long, env = "PGDATA")]
        pgdata: PathBuf,
    },
    /// The synchronous_standby_names the formation's primary must apply.
    StandbyNames {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
    },
}

/// The formation an operator command acts on.
#[derive(Args, Debug, Clone)]
pub struct FormationArg {
    /// Formation of the node(s).
    #[arg(long, default_value = "default")]
    pub formation: String,
}

/// How long a command that changes something follows its progress.
#[derive(Args, Debug, Clone, Copy)]
pub struct WaitArg {
    /// Seconds to follow the change on the monitor's event stream until it
    /// is done; past them the command exits non-zero and says where it
    /// stopped. 0 returns as soon as the monitor accepted the request.
    #[arg(long = "wait", value_name = "SECONDS", default_value_t = 60)]
    pub seconds: u64,
}

#[derive(Subcommand, Debug)]
pub enum Perform {
    /// Planned change of primary: to the best standby, or to --candidate.
    /// Waits until another node than the old primary is writable.
    Switchover {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        #[command(flatten)]
        wait: WaitArg,
        /// Name of the node to promote [default: the best standby].
        #[arg(long, value_name = "NAME")]
        candidate: Option<String>,
    },
    /// The override when automatic failover will not act (a quorum standby
    /// is missing, the primary was not in `primary`, an election waits for
    /// a voter): promotes only a standby that provably holds every
    /// acknowledged commit, or refuses naming the node it would need.
    /// Waits until another node than the old primary is writable.
    Failover {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        #[command(flatten)]
        wait: WaitArg,
        /// Go on even if acknowledged commits may be lost (the most
        /// advanced reachable standby is promoted; an event records the
        /// LSN range that may be lost).
        #[arg(long)]
        allow_data_loss: bool,
    },
    /// Make node --name the primary: a switchover to it.
    Promotion {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        #[command(flatten)]
        wait: WaitArg,
        /// Name of the node to promote, as in `pgpilot show state`.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Set {
    /// A node's setting.
    #[command(subcommand)]
    Node(SetNode),
    /// A formation's setting.
    #[command(subcommand)]
    Formation(SetFormation),
}

#[derive(Subcommand, Debug)]
pub enum SetNode {
    /// Which standby is promoted first: 0..100, 0 means never.
    /// Waits until every node of the group reached its assigned state.
    CandidatePriority {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        #[command(flatten)]
        wait: WaitArg,
        /// Name of the node, as in `pgpilot show state`.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The new priority.
        #[arg(allow_negative_numbers = true)]
        value: i32,
    },
    /// Whether the node counts for synchronous replication (is named in
    /// the primary's synchronous_standby_names). Waits until every node of
    /// the group reached its assigned state.
    ReplicationQuorum {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        #[command(flatten)]
        wait: WaitArg,
        /// Name of the node, as in `pgpilot show state`.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// true or false.
        #[arg(action = clap::ArgAction::Set)]
        value: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum Maintenance {
    /// Maintenance of node --name. Waits until every node of the group
    /// reached its assigned state.
    Maintenance {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        #[command(flatten)]
        wait: WaitArg,
        /// Name of the node, as in `pgpilot show state`.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// (enable only) Allow maintenance of the primary: it starts with
        /// a switchover to the best candidate, and the old primary then
        /// stays stopped in maintenance.
        #[arg(long)]
        allow_failover: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SetFormation {
    /// How many quorum standbys must confirm each commit (k of
    /// `ANY k (...)`, at least 1 while a quorum standby streams); at most
    /// the number of quorum standbys. Waits until every node of the group
    /// reached its assigned state.
    NumberSyncStandbys {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        #[command(flatten)]
        wait: WaitArg,
        /// The new number.
        #[arg(allow_negative_numbers = true)]
        value: i32,
    },
}

#[derive(Subcommand, Debug)]
pub enum Get {
    /// A node's setting.
    #[command(subcommand)]
    Node(GetNode),
    /// A formation's setting.
    #[command(subcommand)]
    Formation(GetFormation),
}

#[derive(Subcommand, Debug)]
pub enum GetNode {
    /// The node's candidate priority.
    CandidatePriority {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        /// Name of the node, as in `pgpilot show state`.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// Whether the node counts for synchronous replication.
    ReplicationQuorum {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
        /// Name of the node, as in `pgpilot show state`.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GetFormation {
    /// The formation's number_sync_standbys.
    NumberSyncStandbys {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        formation: FormationArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum Drop {
    /// Remove a node: its keeper stops PostgreSQL and leaves the group.
    Node {
        #[command(flatten)]
        target: Target,
        /// Id of the node, as in `pgpilot show state`.
        #[arg(long)]
        node_id: i64,
        /// The node's keeper is gone for good: do not wait for it. The row
        /// goes as soon as the node cannot accept writes any more (its
        /// lease ran out); a dropped primary that had synchronous
        /// replication on is replaced by the standby that holds every
        /// acknowledged commit.
        #[arg(long)]
        force: bool,
    },
}

/// Logs go to stderr. Services log at info by default; one-shot commands
/// at warn, so their output stays readable. RUST_LOG overrides both.
pub fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match cli.command {
        Command::Run(_) | Command::Create(_) | Command::Demo(_) | Command::Stop(_) => "info",
        // Log lines would scribble over the full-screen view, which shows
        // the monitor's failures itself.
        Command::Watch(WatchArgs { once: false, .. }) => "off",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (&cli.command, cli.log_format) {
        // A quiet demo: its log goes to a file (see `logfile`).
        (Command::Demo(DemoArgs { verbose: false, .. }), format) => {
            let builder = builder.with_ansi(false).with_writer(crate::logfile::Writer);
            match format {
                LogFormat::Text => builder.init(),
                LogFormat::Json => builder.json().init(),
            }
        }
        (_, LogFormat::Text) => builder.with_writer(std::io::stderr).init(),
        (_, LogFormat::Json) => builder.with_writer(std::io::stderr).json().init(),
    }
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("panic: {info}");
        std::process::exit(101);
    }));
}
