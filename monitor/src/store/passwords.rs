//! The formation's replication passwords (see `crate::core::password`
//! for the rotation's rules). The passwords are drawn by PostgreSQL
//! itself (gen_random_uuid, as the first one in the migrations) and leave
//! the store only for the replies that need them; [`Passwords`] never
//! prints them.

use anyhow::Context;
use sqlx::FromRow;

use super::{GroupTx, Store};
use crate::core::password::Generations;

/// A formation's replication passwords, as stored.
#[derive(Clone, FromRow)]
pub struct Passwords {
    #[sqlx(rename = "replication_password_generation")]
    pub generation: i64,
    #[sqlx(rename = "replication_password")]
    pub current: String,
    #[sqlx(rename = "pending_replication_password")]
    pub pending: Option<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passwords({:?})", self.generations())
    }
}

impl Passwords {
    pub fn generations(&self) -> Generations {
        Generations {
            current: self.generation,
            pending: self.pending.as_ref().map(|_| self.generation + 1),
        }
    }
}

const SELECT: &str = "SELECT replication_password_generation, replication_password, \
                      pending_replication_password FROM formation WHERE name = $1";

impl Store {
    /// The formation's passwords (read with every NodeActive: the reply
    /// may have to carry one).
    pub async fn passwords(&self, formation: &str) -> anyhow::Result<Passwords> {
        sqlx::query_as(SELECT)
            .bind(formation)
            .fetch_one(&self.pool)
            .await
            .context("read the formation's replication password")
    }
}

impl GroupTx {
    /// The formation's passwords, in the group's transaction.
    pub async fn passwords(&mut self) -> anyhow::Result<Passwords> {
        sqlx::query_as(SELECT)
            .bind(&self.view.formation)
            .fetch_one(&mut *self.tx)
            .await
            .context("read the formation's replication password")
    }

    /// Draws a rotation's new password as pending, if the current
    /// generation is still `current` and none is pending
    /// (compare-and-swap: false when another rotation came first).
    pub async fn begin_rotation(&mut self, current: i64) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE formation SET pending_replication_password = \
               replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '') \
             WHERE name = $1 AND replication_password_generation = $2 \
               AND pending_replication_password IS NULL",
        )
        .bind(&self.view.formation)
        .bind(current)
        .execute(&mut *self.tx)
        .await
        .context("store the new replication password")?;
        Ok(done.rows_affected() == 1)
    }

    /// The pending password of generation `generation` is on the role:
    /// it becomes current, the old one is forgotten (compare-and-swap:
    /// false when it is current already).
    pub async fn complete_rotation(&mut self, generation: i64) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE formation SET replication_password = pending_replication_password, \
               replication_password_generation = $2, pending_replication_password = NULL \
             WHERE name = $1 AND replication_password_generation = $2 - 1 \
               AND pending_replication_password IS NOT NULL",
        )
        .bind(&self.view.formation)
        .bind(generation)
        .execute(&mut *self.tx)
        .await
        .context("make the new replication password current")?;
        Ok(done.rows_affected() == 1)
    }
}
