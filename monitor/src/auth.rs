//! Who may call what: the one place the monitor authorises a request.
//!
//! Every gRPC request passes [`AuthLayer`] before any handler runs. It
//! reads the caller's credential (`authorization: Bearer TOKEN`), checks
//! it against the monitor's keys, and checks its kind against
//! [`allowed`], the table of which credentials each method accepts; an
//! unknown method accepts none. The handler then finds the [`Caller`] in
//! the request's extensions; a method that acts for one node checks
//! [`acting_for`] too (a node credential is bound to its node id).
//!
//! Secrets are never logged: refusals name the kind of credential and
//! the reason, once per source address and reason, and are counted in
//! `pgpilot_auth_refusals_total`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context as TaskContext, Poll};

use anyhow::Context;
use pgpilot_proto::credential::{digest, Credential, JoinToken, AUTHORIZATION};
use tonic::Status;

use crate::files::{state_dir, write_durably};
use crate::metrics::Metrics;

/// Credentials a method accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Join,
    Node,
    Read,
    Operator,
}

const READERS: &[Kind] = &[Kind::Node, Kind::Read, Kind::Operator];

/// The table: which credentials each method accepts. `None`: no such
/// method, refused whatever is presented.
pub fn allowed(method: &str) -> Option<&'static [Kind]> {
    Some(match method {
        "Register" => &[Kind::Join],
        "NodeActive" => &[Kind::Node],
        // A node may drop itself (`pgpilot drop node --pgdata NODE_DIR`);
        // only the operator may drop another (checked by `acting_for`).
        "DropNode" => &[Kind::Node, Kind::Operator],
        "Watch" | "ShowState" | "ShowEvents" | "ShowUri" | "ShowSettings" => READERS,
        "PerformSwitchover"
        | "PerformPromotion"
        | "PerformFailover"
        | "SetCandidatePriority"
        | "SetReplicationQuorum"
        | "SetNumberSyncStandbys"
        | "SetMaintenance"
        | "RotateJoinToken"
        | "RotateReplicationPassword" => &[Kind::Operator],
        _ => return None,
    })
}

/// Who a request came from, once authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Joiner,
    Node(i64),
    Reader,
    Operator,
}

impl Caller {
    fn kind(self) -> Kind {
        match self {
            Caller::Joiner => Kind::Join,
            Caller::Node(_) => Kind::Node,
            Caller::Reader => Kind::Read,
            Caller::Operator => Kind::Operator,
        }
    }

    /// For events and logs: who did it, without any secret.
    pub fn describe(self) -> String {
        match self {
            Caller::Joiner => "a joining node".into(),
            Caller::Node(id) => format!("node {id}"),
            Caller::Reader => "a reader".into(),
            Caller::Operator => "the operator".into(),
        }
    }
}

/// The authenticated caller of `req` (set by [`AuthLayer`]).
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("no credential was checked for this request"))
}

/// Refuses a node credential acting for another node; the operator may
/// act for any.
pub fn acting_for(caller: Caller, node_id: i64) -> Result<(), Status> {
    match caller {
        Caller::Operator => Ok(()),
        Caller::Node(id) if id == node_id => Ok(()),
        Caller::Node(id) => Err(Status::permission_denied(format!(
            "the credential of node {id} cannot act for node {node_id}"
        ))),
        other => Err(Status::permission_denied(format!(
            "{} cannot act for node {node_id}",
            other.describe()
        ))),
    }
}

/// A node's credential watches its own group only (the keeper asks for
/// exactly that): one node cannot follow another formation's events.
/// `home` is where the node is registered, `None` when it is not (dropped
/// since the credential was checked). Readers and the operator watch
/// anything.
pub fn watch_scope(
    caller: Caller,
    home: Option<(&str, i32)>,
    formation: &str,
    group_id: Option<i32>,
) -> Result<(), Status> {
    let Caller::Node(id) = caller else {
        return Ok(());
    };
    match home {
        None => Err(Status::unauthenticated(format!(
            "node {id} is no longer registered: its credential was revoked"
        ))),
        Some((f, g)) if f == formation && group_id == Some(g) => Ok(()),
        Some((f, g)) => Err(Status::permission_denied(format!(
            "the credential of node {id} watches only its own group (formation {f}, group {g})"
        ))),
    }
}

/// Where the monitor keeps its tokens: `DIR.pgpilot/credentials/`, 0700,
/// each file 0600. The CLI on this machine reads them (`--pgdata
/// MONITOR_DIR`).
pub fn credentials_dir(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("credentials")
}

pub fn join_token_path(pgdata: &Path) -> PathBuf {
    credentials_dir(pgdata).join("join-token")
}

pub fn operator_token_path(pgdata: &Path) -> PathBuf {
    credentials_dir(pgdata).join("operator-token")
}

pub fn read_token_path(pgdata: &Path) -> PathBuf {
    credentials_dir(pgdata).join("read-token")
}

/// Makes the tokens that are missing (`create monitor`; a re-run keeps
/// the ones there). `ca_sha256`: the CA's digest for the join token,
/// `None` without TLS.
pub fn ensure_tokens(pgdata: &Path, ca_sha256: Option<&str>) -> anyhow::Result<()> {
    let dir = credentials_dir(pgdata);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    pgpilot_pgproc::set_mode(&dir, 0o700)?;
    if !join_token_path(pgdata).is_file() {
        write_join_token(pgdata, ca_sha256)?;
    }
    for (path, make) in [
        (
            operator_token_path(pgdata),
            (|s| Credential::Operator { secret: s }) as fn(String) -> Credential,
        ),
        (read_token_path(pgdata), |s| Credential::Reader {
            secret: s,
        }),
    ] {
        if !path.is_file() {
            let token = make(Credential::new_secret()).token();
            write_durably(&path, format!("{token}\n").as_bytes(), 0o600)?;
        }
    }
    Ok(())
}

fn write_join_token(pgdata: &Path, ca_sha256: Option<&str>) -> anyhow::Result<JoinToken> {
    let token = JoinToken {
        secret: Credential::new_secret(),
        ca_sha256: ca_sha256.map(str::to_string),
    };
    write_durably(
        &join_token_path(pgdata),
        format!("{}\n", token.to_text()).as_bytes(),
        0o600,
    )?;
    Ok(token)
}

/// Reads a token file of ours, checked.
pub fn read_token(path: &Path) -> anyhow::Result<Credential> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Credential::parse(&text).with_context(|| format!("{} holds no valid token", path.display()))
}

/// The monitor's keys, in memory: digests only.
pub struct Keys {
    pgdata: PathBuf,
    join: RwLock<String>,
    operator: String,
    reader: String,
    /// node id -> digest of its credential; loaded from the store at
    /// start, added by Register, removed with the node's row.
    nodes: RwLock<HashMap<i64, String>>,
}

impl Keys {
    /// Loads the token files of the monitor in `pgdata`.
    pub fn load(pgdata: &Path) -> anyhow::Result<Keys> {
        let d = |p: &Path| -> anyhow::Result<String> {
            read_token(p).map(|c| c.digest()).with_context(|| {
                "re-run `pgpilot create monitor --pgdata DIR` to make the missing tokens"
                    .to_string()
            })
        };
        Ok(Keys {
            pgdata: pgdata.to_path_buf(),
            join: RwLock::new(d(&join_token_path(pgdata))?),
            operator: d(&operator_token_path(pgdata))?,
            reader: d(&read_token_path(pgdata))?,
            nodes: RwLock::default(),
        })
    }

    /// Replaces the join token: the old one stops working at once;
    /// registered nodes keep their own credentials.
    pub fn rotate_join_token(&self) -> anyhow::Result<JoinToken> {
        // One rotation at a time, from reading the file to the digest in
        // memory: two at once must not leave the file holding one token
        // and the monitor accepting the other.
        let mut join = self.join.write().unwrap_or_else(|p| p.into_inner());
        let old = JoinToken::parse(&std::fs::read_to_string(join_token_path(&self.pgdata))?)
            .context("read the current join token")?;
        let new = write_join_token(&self.pgdata, old.ca_sha256.as_deref())?;
        *join = new.credential().digest();
        Ok(new)
    }

    pub fn set_nodes(&self, nodes: impl IntoIterator<Item = (i64, String)>) {
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = nodes.into_iter().collect();
    }

    pub fn add_node(&self, node_id: i64, digest: String) {
        self.nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id, digest);
    }

    /// Whether node `node_id` holds a credential still.
    pub fn has_node(&self, node_id: i64) -> bool {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&node_id)
    }

    pub fn remove_node(&self, node_id: i64) {
        self.nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node_id);
    }

    /// Who `credential` proves the caller is, or why not.
    fn authenticate(&self, credential: &Credential) -> Result<Caller, &'static str> {
        let ok = |stored: &str| credential.matches(stored);
        match credential {
            Credential::Join { .. } => {
                let join = self.join.read().unwrap_or_else(|p| p.into_inner());
                ok(&join)
                    .then_some(Caller::Joiner)
                    .ok_or("a join token that is not (or no longer) the formation's")
            }
            Credential::Operator { .. } => ok(&self.operator)
                .then_some(Caller::Operator)
                .ok_or("a wrong operator credential"),
            Credential::Reader { .. } => ok(&self.reader)
                .then_some(Caller::Reader)
                .ok_or("a wrong read credential"),
            Credential::Node { node_id, .. } => {
                let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
                match nodes.get(node_id) {
                    Some(stored) if ok(stored) => Ok(Caller::Node(*node_id)),
                    Some(_) => Err("a wrong node credential"),
                    None => Err("the credential of a node that is not registered (dropped?)"),
                }
            }
        }
    }
}

/// Decides one request: the caller, or the refusal and its reason (for
/// the log and the metric).
pub fn authorize(
    keys: &Keys,
    method: &str,
    header: Option<&[u8]>,
) -> Result<Caller, (Status, &'static str)> {
    let Some(accepted) = allowed(method) else {
        return Err((
            Status::unimplemented(format!("the monitor has no method {method:?}")),
            "unknown method",
        ));
    };
    let needs = || {
        accepted
            .iter()
            .map(|k| match k {
                Kind::Join => "the join token",
                Kind::Node => "a node credential",
                Kind::Read => "the read credential",
                Kind::Operator => "the operator credential",
            })
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let Some(header) = header else {
        return Err((
            Status::unauthenticated(format!(
                "{method} needs {}; none was presented (see `pgpilot show join-token` and the README's Security section)",
                needs()
            )),
            "no credential",
        ));
    };
    let token = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or((
            Status::unauthenticated("the authorization header is not `Bearer TOKEN`"),
            "malformed header",
        ))?;
    let credential = Credential::parse(token).map_err(|e| {
        (
            Status::unauthenticated(format!("{e}")),
            "malformed credential",
        )
    })?;
    let caller = keys
        .authenticate(&credential)
        .map_err(|why| (Status::unauthenticated(format!("refused: {why}")), why))?;
    if !accepted.contains(&caller.kind()) {
        return Err((
            Status::permission_denied(format!(
                "{method} needs {}, not {}",
                needs(),
                credential.describe()
            )),
            "credential of the wrong kind",
        ));
    }
    Ok(caller)
}

/// How many (source, reason) pairs are remembered for logging once; past
/// that, refusals are only counted, so a flood cannot fill memory or logs.
const REMEMBERED_REFUSALS: usize = 4096;

/// How long a (source, reason) pair stays logged: a source that keeps
/// failing is logged again after this, and a flood that filled the set
/// cannot silence the log for good.
const REFUSAL_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

/// A source and a reason, logged once.
type Logged = (Option<IpAddr>, &'static str);

/// Logs each (source, reason) once per [`REFUSAL_MEMORY`] and counts
/// every refusal.
pub struct Refusals {
    /// Since when, and what was logged.
    seen: Mutex<(std::time::Instant, HashSet<Logged>)>,
    metrics: Arc<Metrics>,
}

impl Refusals {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Refusals {
            seen: Mutex::new((std::time::Instant::now(), HashSet::new())),
            metrics,
        }
    }

    fn record(&self, source: Option<IpAddr>, method: &str, reason: &'static str) {
        self.metrics.auth_refused(reason);
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (since, seen) = &mut *guard;
        if since.elapsed() >= REFUSAL_MEMORY {
            *since = std::time::Instant::now();
            seen.clear();
        }
        if seen.len() >= REMEMBERED_REFUSALS {
            return;
        }
        if seen.insert((source, reason)) {
            let from = source.map_or_else(|| "an unknown address".into(), |a| a.to_string());
            tracing::warn!(
                "refused {method} from {from}: {reason} (logged once per address and reason every 10 minutes; all are counted in pgpilot_auth_refusals_total)"
            );
        }
    }
}

/// The tower layer in front of every gRPC method.
#[derive(Clone)]
pub struct AuthLayer {
    keys: Arc<Keys>,
    refusals: Arc<Refusals>,
    /// Told of each connection that carried a valid credential.
    gate: Arc<crate::conn_limit::Gate>,
}

impl AuthLayer {
    pub fn new(keys: Arc<Keys>, metrics: Arc<Metrics>, gate: Arc<crate::conn_limit::Gate>) -> Self {
        AuthLayer {
            keys,
            refusals: Arc::new(Refusals::new(metrics)),
            gate,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

type Body = tonic::body::Body;
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // "/pgpilot.v1.Monitor/NodeActive" -> "NodeActive"; any other
        // service is no method of ours.
        let method = req
            .uri()
            .path()
            .strip_prefix("/pgpilot.v1.Monitor/")
            .unwrap_or("")
            .to_string();
        let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        match authorize(&self.layer.keys, &method, header) {
            Ok(caller) => {
                if let Some(peer) = source(&req) {
                    self.layer.gate.prove(peer);
                }
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err((status, reason)) => {
                let ip = source(&req).map(|a| a.ip());
                self.layer.refusals.record(ip, &method, reason);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The peer address tonic records on each connection (plain or TLS).
fn source(req: &http::Request<Body>) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// The digest stored for a new node credential.
pub fn node_credential(node_id: i64) -> (Credential, String) {
    let c = Credential::Node {
        node_id,
        secret: Credential::new_secret(),
    };
    let d = digest(c.secret());
    (c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (tempfile::TempDir, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("m");
        ensure_tokens(&pgdata, None).unwrap();
        let keys = Keys::load(&pgdata).unwrap();
        (dir, keys)
    }

    fn bearer(c: &Credential) -> Vec<u8> {
        format!("Bearer {}", c.token()).into_bytes()
    }

    #[test]
    fn every_method_of_the_service_is_in_the_table() {
        for m in [
            "Register",
            "NodeActive",
            "Watch",
            "ShowState",
            "ShowEvents",
            "ShowUri",
            "ShowSettings",
            "DropNode",
            "PerformSwitchover",
            "PerformPromotion",
            "PerformFailover",
            "SetCandidatePriority",
            "SetReplicationQuorum",
            "SetNumberSyncStandbys",
            "SetMaintenance",
            "RotateJoinToken",
            "RotateReplicationPassword",
        ] {
            assert!(allowed(m).is_some(), "{m} is not in the table");
        }
        assert!(allowed("Anything").is_none());
    }

    #[test]
    fn kinds_are_held_to_their_methods() {
        let (_d, keys) = keys();
        let pgdata = keys.pgdata.clone();
        let op = read_token(&operator_token_path(&pgdata)).unwrap();
        let rd = read_token(&read_token_path(&pgdata)).unwrap();
        let join = read_token(&join_token_path(&pgdata)).unwrap();
        let (node, d) = node_credential(4);
        keys.add_node(4, d);

        assert_eq!(
            authorize(&keys, "SetMaintenance", Some(&bearer(&op))).unwrap(),
            Caller::Operator
        );
        assert_eq!(
            authorize(&keys, "ShowState", Some(&bearer(&rd))).unwrap(),
            Caller::Reader
        );
        assert_eq!(
            authorize(&keys, "Register", Some(&bearer(&join))).unwrap(),
            Caller::Joiner
        );
        assert_eq!(
            authorize(&keys, "NodeActive", Some(&bearer(&node))).unwrap(),
            Caller::Node(4)
        );
        let refused = |m: &str, h: Option<&[u8]>| authorize(&keys, m, h).unwrap_err().0.code();
        assert_eq!(
            refused("PerformFailover", Some(&bearer(&rd))),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            refused("PerformFailover", Some(&bearer(&node))),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            refused("NodeActive", Some(&bearer(&join))),
            tonic::Code::PermissionDenied
        );
        assert_eq!(refused("Register", None), tonic::Code::Unauthenticated);
        assert_eq!(
            refused("Register", Some(b"Basic x")),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            refused("Nope", Some(&bearer(&op))),
            tonic::Code::Unimplemented
        );
        // A node credential with the right id and a wrong secret, and one
        // of a node that left.
        let (forged, _) = node_credential(4);
        assert_eq!(
            refused("NodeActive", Some(&bearer(&forged))),
            tonic::Code::Unauthenticated
        );
        keys.remove_node(4);
        assert_eq!(
            refused("NodeActive", Some(&bearer(&node))),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn rotation_retires_the_old_join_token() {
        let (_d, keys) = keys();
        let old = read_token(&join_token_path(&keys.pgdata)).unwrap();
        let new = keys.rotate_join_token().unwrap();
        assert!(authorize(&keys, "Register", Some(&bearer(&old))).is_err());
        assert!(authorize(&keys, "Register", Some(&bearer(&new.credential()))).is_ok());
        assert_eq!(
            read_token(&join_token_path(&keys.pgdata)).unwrap(),
            new.credential()
        );
    }

    #[test]
    fn refusals_never_echo_the_secret() {
        let (_d, keys) = keys();
        let fake = Credential::Operator {
            secret: Credential::new_secret(),
        };
        let (status, reason) =
            authorize(&keys, "SetMaintenance", Some(&bearer(&fake))).unwrap_err();
        assert!(!status.message().contains(fake.secret()));
        assert!(!reason.contains(fake.secret()));
    }

    #[test]
    fn a_node_acts_for_itself_only() {
        assert!(acting_for(Caller::Node(3), 3).is_ok());
        assert!(acting_for(Caller::Operator, 3).is_ok());
        assert_eq!(
            acting_for(Caller::Node(2), 3).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(acting_for(Caller::Reader, 3).is_err());
    }

    #[test]
    fn a_node_watches_only_its_own_group() {
        let node = Caller::Node(3);
        assert!(watch_scope(node, Some(("default", 0)), "default", Some(0)).is_ok());
        for (f, g) in [("default", Some(1)), ("other", Some(0)), ("", None)] {
            let e = watch_scope(node, Some(("default", 0)), f, g).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{f} {g:?}");
        }
        let e = watch_scope(node, None, "default", Some(0)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(watch_scope(Caller::Reader, None, "", None).is_ok());
        assert!(watch_scope(Caller::Operator, None, "x", Some(9)).is_ok());
    }
}
