//! The SQL the keeper runs on its own PostgreSQL (superuser, private socket).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpilot_proto::Lsn;
use sqlx::postgres::PgConnection;
use sqlx::Row;

use super::conf::REPLICATION_USER;

/// How often the keeper's waits (replay caught up, a synchronous standby
/// caught up, promotion finished) look again. They sit on the way to a
/// switchover's end, while no node takes writes, so they poll tightly
/// (before: 20 ms, and promotion waited inside pg_promote, which looks only
/// every 100 ms); each look is one short query on a local connection, and
/// every wait has its own deadline.
const WAIT_POLL: Duration = Duration::from_millis(10);
/// How long promotion may take to end recovery, as pg_promote's own
/// default wait.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the keeper reports about a running PostgreSQL (defined beside the
/// decisions that use it, so that a simulation can build one).
pub use crate::engine::PgStatus as Status;

fn lsn(text: Option<String>) -> anyhow::Result<Lsn> {
    match text {
        Some(t) => t.parse().map_err(|e| anyhow::anyhow!("bad LSN {t:?}: {e}")),
        None => Ok(Lsn(0)),
    }
}

pub async fn status(c: &mut PgConnection) -> anyhow::Result<Status> {
    let row = sqlx::query(
        "SELECT pg_is_in_recovery(), \
           CASE WHEN pg_is_in_recovery() \
             THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text \
             ELSE pg_current_wal_flush_lsn()::text END, \
           CASE WHEN pg_is_in_recovery() \
             THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
                           (SELECT timeline_id FROM pg_control_checkpoint())) \
             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END, \
           (SELECT shobj_description(oid, 'pg_authid') FROM pg_roles \
             WHERE rolname = 'pgpilot_replicator')",
    )
    .fetch_one(&mut *c)
    .await
    .context("read the node's recovery state, LSN and timeline")?;
    let in_recovery: bool = row.get(0);
    let timeline: i32 = row.get(2);
    let replay: Option<String> = row.get(3);
    let comment: Option<String> = row.get(4);
    let mut s = Status {
        in_recovery,
        role_password_generation: parse_generation_comment(comment.as_deref()),
        timeline: timeline as u32,
        lsn: lsn(row.get(1))?,
        replay_lsn: replay.map(|t| lsn(Some(t))).transpose()?,
        ..Status::default()
    };
    // Which walsenders count as streaming is the engine's rule
    // (`fresh_standbys`): a walsender says 'streaming' for a while after
    // its standby went silent.
    let standbys = sqlx::query(
        "SELECT application_name, sync_state, \
           coalesce((extract(epoch FROM (now() - reply_time)) * 1000)::bigint, 1000000) \
         FROM pg_stat_replication \
         WHERE application_name LIKE 'pgpilot\\_node\\_%' AND state = 'streaming'",
    )
    .fetch_all(&mut *c)
    .await
    .context("read pg_stat_replication")?;
    let rank = |s: &str| match s {
        "quorum" | "sync" => 3,
        "potential" => 2,
        "async" => 1,
        _ => 0,
    };
    let mut walsenders = Vec::new();
    for r in standbys {
        let (name, state, reply_ms): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        if rank(&state) > rank(&s.replication_state) {
            s.replication_state = state;
        }
        walsenders.push((name, reply_ms.max(0) as u64));
    }
    (s.streaming_standbys, s.oldest_reply_ms) = crate::engine::fresh_standbys(walsenders);
    if in_recovery {
        let row = sqlx::query(
            "SELECT status = 'streaming', \
               (extract(epoch FROM (now() - last_msg_receipt_time)) * 1000)::bigint, \
               latest_end_lsn::text \
             FROM pg_stat_wal_receiver WHERE pid IS NOT NULL",
        )
        .fetch_optional(&mut *c)
        .await
        .context("read pg_stat_wal_receiver")?;
        if let Some(r) = &row {
            let end: Option<String> = r.get(2);
            s.upstream_wal_end = end.map(|t| lsn(Some(t))).transpose()?;
        }
        s.wal_receiver = row.map(|r| {
            let streaming: Option<bool> = r.get(0);
            let ms: Option<i64> = r.get(1);
            (streaming.unwrap_or(false), ms.map(|ms| ms.max(0) as u64))
        });
    }
    Ok(s)
}

pub async fn in_recovery(c: &mut PgConnection) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut *c)
        .await
        .context("ask whether PostgreSQL is in recovery")
}

pub async fn reload(c: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut *c)
        .await
        .context("reload the configuration")?;
    Ok(())
}

pub async fn show(c: &mut PgConnection, name: &str) -> anyhow::Result<String> {
    sqlx::query_scalar("SELECT current_setting($1)")
        .bind(name)
        .fetch_one(&mut *c)
        .await
        .with_context(|| format!("SHOW {name}"))
}

/// " (set in FILE:LINE)" or "" for a setting's source.
pub async fn setting_source(c: &mut PgConnection, name: &str) -> anyhow::Result<String> {
    let row: Option<(Option<String>, Option<i32>, String)> =
        sqlx::query_as("SELECT sourcefile, sourceline, source FROM pg_settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *c)
            .await?;
    Ok(match row {
        Some((Some(f), Some(l), _)) => format!(" (set in {f}:{l})"),
        Some((_, _, source)) => format!(" (source: {source})"),
        None => String::new(),
    })
}

/// Errors PostgreSQL found in its configuration files, if any.
pub async fn settings_errors(c: &mut PgConnection) -> anyhow::Result<Option<String>> {
    type FileError = (Option<String>, Option<i32>, Option<String>, String);
    let rows: Vec<FileError> = sqlx::query_as(
        "SELECT sourcefile, sourceline, name, error FROM pg_file_settings WHERE error IS NOT NULL",
    )
    .fetch_all(&mut *c)
    .await
    .context("read pg_file_settings")?;
    Ok((!rows.is_empty()).then(|| {
        rows.iter()
            .map(|(f, l, n, e)| {
                format!(
                    "{}:{} {}: {e}",
                    f.as_deref().unwrap_or("?"),
                    l.unwrap_or(0),
                    n.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }))
}

pub async fn hba_errors(c: &mut PgConnection) -> anyhow::Result<Option<String>> {
    let rows: Vec<(i32, String)> =
        sqlx::query_as("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL")
            .fetch_all(&mut *c)
            .await
            .context("read pg_hba_file_rules")?;
    Ok((!rows.is_empty()).then(|| {
        rows.iter()
            .map(|(l, e)| format!("line {l}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    }))
}

/// The replication role, with the formation's password (or none with
/// `--auth trust`) and its generation as the role's comment (see
/// [`set_replication_password`]), and the functions pg_rewind needs on
/// its source.
pub async fn ensure_replication_role(
    c: &mut PgConnection,
    password: &str,
    generation: i64,
) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(REPLICATION_USER)
            .fetch_one(&mut *c)
            .await?;
    // A role that already holds a newer password than this keeper's
    // keeper.toml (a crash between a rotation's ALTER ROLE and storing
    // the password; or an adopted server) keeps it: setting the older one
    // again would lock out the standbys that already use the newer one.
    // The engine's rotation rule catches this keeper up from the reply.
    if exists && generation > 0 {
        let comment: Option<String> = sqlx::query_scalar(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
        )
        .bind(REPLICATION_USER)
        .fetch_one(&mut *c)
        .await?;
        if parse_generation_comment(comment.as_deref()).is_some_and(|g| g > generation) {
            return grant_rewind_functions(c).await;
        }
    }
    let verb = if exists { "ALTER" } else { "CREATE" };
    let pw = if password.is_empty() {
        "PASSWORD NULL".to_string()
    } else {
        // The verifier, not the password: see `super::scram`.
        format!(
            "PASSWORD {}",
            sql_literal(&super::scram::verifier(password))
        )
    };
    // Utility statements take no parameters; the verifier is quoted as a
    // literal, and this connection logs no statements.
    let stmt = format!("{verb} ROLE {REPLICATION_USER} WITH LOGIN REPLICATION {pw}");
    // Unnamed statement (not persistent): nothing keeps the password.
    sqlx::query(&stmt)
        .persistent(false)
        .execute(&mut *c)
        .await
        .context("create the replication role")?;
    if generation > 0 {
        let comment = format!(
            "COMMENT ON ROLE {REPLICATION_USER} IS {}",
            sql_literal(&format!("{GENERATION_COMMENT}{generation}"))
        );
        sqlx::query(&comment)
            .execute(&mut *c)
            .await
            .context("record the password's generation on the replication role")?;
    }
    grant_rewind_functions(c).await
}

/// What pg_rewind needs of its source, granted to the replication role.
async fn grant_rewind_functions(c: &mut PgConnection) -> anyhow::Result<()> {
    for f in [
        "pg_catalog.pg_ls_dir(text, boolean, boolean)",
        "pg_catalog.pg_stat_file(text, boolean)",
        "pg_catalog.pg_read_binary_file(text)",
        "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
    ] {
        let stmt = format!("GRANT EXECUTE ON FUNCTION {f} TO {REPLICATION_USER}");
        sqlx::query(&stmt)
            .execute(&mut *c)
            .await
            .with_context(|| format!("grant {f} to the replication role"))?;
    }
    Ok(())
}

/// The comment the keeper puts on the replication role with each
/// password it sets: the role's password generation. A comment on a role
/// is a shared catalog row, replicated with the role, so every node's
/// PostgreSQL says which generation its role holds, and a keeper that
/// becomes primary sees whether the last ALTER ROLE reached it.
const GENERATION_COMMENT: &str = "pgpilot replication password generation ";

/// The generation in a role comment ([`GENERATION_COMMENT`]); `None`
/// for no comment or another one.
pub fn parse_generation_comment(comment: Option<&str>) -> Option<i64> {
    comment?
        .strip_prefix(GENERATION_COMMENT)?
        .trim()
        .parse()
        .ok()
}

/// Sets the replication role's password to `password` (generation
/// `generation`): its SCRAM verifier, computed here so that the password
/// itself never reaches the server ([`super::scram`]), and the generation
/// as the role's comment, in one transaction.
///
/// Precondition: a writable primary (the role replicates from here). On
/// success, new connections as the replication role need the new
/// password; connections already open stay (standbys' WAL receivers keep
/// streaming until they reconnect). On error nothing changed.
pub async fn set_replication_password(
    c: &mut PgConnection,
    password: &str,
    generation: i64,
) -> anyhow::Result<()> {
    let verifier = super::scram::verifier(password);
    let mut tx = sqlx::Connection::begin(&mut *c)
        .await
        .context("begin the password change")?;
    // Even the verifier stays out of the server's log.
    for set in [
        "SET LOCAL log_statement = 'none'",
        "SET LOCAL log_min_error_statement = 'panic'",
    ] {
        sqlx::query(set)
            .execute(&mut *tx)
            .await
            .context("turn statement logging off for the password change")?;
    }
    // Utility statements take no parameters: both values are quoted
    // literals (a verifier and a number, neither the password).
    let alter = format!(
        "ALTER ROLE {REPLICATION_USER} WITH LOGIN REPLICATION PASSWORD {}",
        sql_literal(&verifier)
    );
    sqlx::query(&alter)
        .persistent(false)
        .execute(&mut *tx)
        .await
        .context("set the replication role's new password")?;
    let comment = format!(
        "COMMENT ON ROLE {REPLICATION_USER} IS {}",
        sql_literal(&format!("{GENERATION_COMMENT}{generation}"))
    );
    sqlx::query(&comment)
        .execute(&mut *tx)
        .await
        .context("record the password's generation on the replication role")?;
    tx.commit().await.context("commit the password change")?;
    Ok(())
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Physical slots named `pgpilot_node_*` that exist here.
pub async fn pgpilot_slots(c: &mut PgConnection) -> anyhow::Result<Vec<(String, bool)>> {
    sqlx::query_as(
        "SELECT slot_name::text, active FROM pg_replication_slots \
         WHERE slot_type = 'physical' AND slot_name LIKE 'pgpilot\\_node\\_%'",
    )
    .fetch_all(&mut *c)
    .await
    .context("list replication slots")
}

pub async fn create_slot(c: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    // immediately_reserve: WAL is kept from now on, even before the
    // standby first connects (its basebackup needs it).
    sqlx::query("SELECT pg_create_physical_replication_slot($1, true)")
        .bind(name)
        .execute(&mut *c)
        .await
        .with_context(|| format!("create replication slot {name}"))?;
    Ok(())
}

pub async fn drop_slot(c: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(name)
        .execute(&mut *c)
        .await
        .with_context(|| format!("drop replication slot {name}"))?;
    Ok(())
}

/// On a standby: moves a slot kept for another node up to `to` (never past
/// what this node replayed), so it retains only WAL that node may still need.
pub async fn advance_slot(c: &mut PgConnection, name: &str, to: Lsn) -> anyhow::Result<()> {
    sqlx::query(
        "SELECT pg_replication_slot_advance($1, least($2::pg_lsn, pg_last_wal_replay_lsn())) \
         FROM pg_replication_slots \
         WHERE slot_name = $1 AND restart_lsn < least($2::pg_lsn, pg_last_wal_replay_lsn())",
    )
    .bind(name)
    .bind(to.to_string())
    .execute(&mut *c)
    .await
    .with_context(|| format!("advance replication slot {name}"))?;
    Ok(())
}

/// Waits until the WAL receiver is gone and replay reached what was
/// received: after this, promotion loses nothing the old primary shipped.
pub async fn wait_replayed(c: &mut PgConnection, timeout: Duration) -> anyhow::Result<Lsn> {
    let deadline = Instant::now() + timeout;
    loop {
        let (receiver, received, replayed): (bool, Option<String>, Option<String>) =
            sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE pid IS NOT NULL), \
                        pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text",
            )
            .fetch_one(&mut *c)
            .await
            .context("read replay progress")?;
        let (received, replayed) = (lsn(received)?, lsn(replayed)?);
        if !receiver && replayed >= received {
            return Ok(replayed);
        }
        if Instant::now() > deadline {
            bail!(
                "replay did not catch up within {} s (WAL receiver {}, received {received}, replayed \
                 {replayed}); promotion waits, the monitor's goal stays until it can proceed",
                timeout.as_secs(),
                if receiver { "still running" } else { "stopped" }
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// Waits until replay reached `target` (a fast_forward streaming from a
/// voter): the WAL receiver may run, it is what brings the WAL.
pub async fn wait_replayed_to(
    c: &mut PgConnection,
    target: Lsn,
    timeout: Duration,
) -> anyhow::Result<Lsn> {
    let deadline = Instant::now() + timeout;
    loop {
        let replayed: Option<String> = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn()::text")
            .fetch_one(&mut *c)
            .await
            .context("read replay progress")?;
        let replayed = lsn(replayed)?;
        if replayed >= target {
            return Ok(replayed);
        }
        if Instant::now() > deadline {
            bail!(
                "replay reached {replayed}, not {target}, within {} s; the fast_forward tries \
                 again (`pgpilot show events` says why its source cannot serve it)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// How many synchronous standbys a commit waits for under the
/// synchronous_standby_names in force: k of `ANY k (...)`, else 1.
pub async fn sync_quorum(c: &mut PgConnection) -> anyhow::Result<i64> {
    let ssn: String = sqlx::query_scalar("SHOW synchronous_standby_names")
        .fetch_one(&mut *c)
        .await
        .context("read synchronous_standby_names")?;
    Ok(parse_sync_quorum(&ssn))
}

/// k of `ANY k (...)` (the only form pgpilot writes); 1 otherwise.
pub fn parse_sync_quorum(ssn: &str) -> i64 {
    ssn.trim()
        .strip_prefix("ANY ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|k| k.parse::<i64>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Waits until `k` synchronous standbys (sync_state quorum or sync) have
/// flushed everything flushed here now: as many as a commit needs, so
/// that commits acknowledged before synchronous replication was on (or
/// under a smaller k) are on as many standbys as every later one. The
/// operator's `perform failover` counts on that.
pub async fn wait_sync_standby(
    c: &mut PgConnection,
    k: i64,
    timeout: Duration,
) -> anyhow::Result<Lsn> {
    let target: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(&mut *c)
        .await
        .context("read the flush LSN")?;
    let deadline = Instant::now() + timeout;
    loop {
        let caught_up: bool = sqlx::query_scalar(
            "SELECT count(*) >= $2 FROM pg_stat_replication \
             WHERE sync_state IN ('quorum', 'sync') AND flush_lsn >= $1::pg_lsn",
        )
        .bind(&target)
        .bind(k)
        .fetch_one(&mut *c)
        .await
        .context("read pg_stat_replication")?;
        if caught_up {
            return lsn(Some(target));
        }
        if Instant::now() > deadline {
            bail!(
                "fewer than {k} synchronous standby(s) confirmed {target} within {} s; the node \
                 stays in its current state and tries again",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// The first checkpoint after a promotion. It may legitimately outlast the
/// connection's statement_timeout: it writes every dirty buffer. It gets
/// its own bound on this connection (a killed checkpoint would leave
/// pg_control on the old timeline, see below, so a generous one).
pub async fn timeline_checkpoint(c: &mut PgConnection) -> anyhow::Result<()> {
    // pg_control still names the old timeline until the first checkpoint
    // after promotion, which PostgreSQL otherwise spreads over minutes;
    // until then pg_rewind on the old primary finds "the same timeline"
    // and rewinds nothing. pg_auto_failover and Patroni do the same.
    sqlx::query("SET statement_timeout = '300s'")
        .execute(&mut *c)
        .await
        .context("raise statement_timeout for the checkpoint")?;
    sqlx::query("CHECKPOINT")
        .execute(&mut *c)
        .await
        .context("checkpoint after promotion")?;
    sqlx::query("RESET statement_timeout")
        .execute(&mut *c)
        .await
        .context("reset statement_timeout")?;
    Ok(())
}

/// CHECKPOINT (an immediate one: it writes every dirty buffer at full
/// speed). Bounded by the connection's statement_timeout.
pub async fn checkpoint(c: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT")
        .execute(&mut *c)
        .await
        .context("checkpoint")?;
    Ok(())
}

/// pg_promote, then waits until recovery has ended (at most
/// [`PROMOTE_TIMEOUT`]). The checkpoint that puts the new timeline into
/// pg_control comes later, once the node takes writes
/// ([`timeline_checkpoint`]).
///
/// pg_promote(wait => true) would look whether recovery ended only every
/// 100 ms (WAITS_PER_SECOND in xlogfuncs.c), up to 100 ms of a
/// switchover's write gap; so it only signals (wait => false), and the
/// wait is ours, every [`WAIT_POLL`].
///
/// On error the node may or may not have promoted; the transition runs
/// again, and its plan skips the promotion of a node no longer in
/// recovery.
pub async fn promote(c: &mut PgConnection) -> anyhow::Result<()> {
    let signalled: bool = sqlx::query_scalar("SELECT pg_promote(false)")
        .fetch_one(&mut *c)
        .await
        .context("promote")?;
    if !signalled {
        bail!("pg_promote could not signal the postmaster");
    }
    let deadline = Instant::now() + PROMOTE_TIMEOUT;
    while in_recovery(c).await? {
        if Instant::now() > deadline {
            bail!(
                "promotion did not finish within {} s",
                PROMOTE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_sync_quorum;

    #[test]
    fn the_sync_quorum_is_k_of_any_k() {
        assert_eq!(
            parse_sync_quorum("ANY 2 (pgpilot_node_2, pgpilot_node_3)"),
            2
        );
        assert_eq!(parse_sync_quorum("ANY 1 (pgpilot_node_2)"), 1);
        assert_eq!(parse_sync_quorum(""), 1);
        assert_eq!(parse_sync_quorum("ANY 0 (x)"), 1);
    }
}
