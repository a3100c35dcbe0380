//! The OS user PostgreSQL programs run as.

use std::path::Path;

use anyhow::{anyhow, Context};
use nix::unistd::{Uid, User};

use crate::Result;

/// An unprivileged OS user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Who runs PostgreSQL programs: `Some(user)` when we are root (PostgreSQL
/// refuses to run as root), `None` when we run them as ourselves. A missing
/// user is created as a system user with no login shell.
pub fn postgres_runner(requested: Option<&str>) -> Result<Option<OsUser>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let name = requested.unwrap_or("postgres");
    if name == "root" {
        return Err(
            anyhow!("PostgreSQL cannot run as root: choose an unprivileged OS user").into(),
        );
    }
    let user = match User::from_name(name).context("look up the OS user")? {
        Some(u) => u,
        None => {
            create_user(name)?;
            User::from_name(name)
                .context("look up the OS user")?
                .ok_or_else(|| anyhow!("OS user {name} still missing after useradd"))?
        }
    };
    if user.uid.is_root() {
        return Err(anyhow!("OS user {name} has uid 0: PostgreSQL cannot run as root").into());
    }
    Ok(Some(OsUser {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

fn create_user(name: &str) -> Result<()> {
    tracing::info!("creating OS user {name} to run PostgreSQL");
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .context("run useradd")?;
    // Another process may have created it at the same time.
    if !out.status.success() && User::from_name(name).ok().flatten().is_none() {
        return Err(anyhow!(
            "useradd {name} failed: {}; create the user yourself",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// Gives `path` (and, with `recursive`, everything below it) to the user.
/// No-op when PostgreSQL runs as ourselves.
pub fn chown_dir(user: &Option<OsUser>, path: &Path, recursive: bool) -> Result<()> {
    let Some(u) = user else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
        .with_context(|| format!("chown {} to {}", path.display(), u.name))?;
    if recursive && path.is_dir() {
        for entry in std::fs::read_dir(path).with_context(|| format!("read {}", path.display()))? {
            let entry = entry.context("read a directory entry")?;
            let p = entry.path();
            if entry.file_type().context("read a file type")?.is_dir() {
                chown_dir(user, &p, true)?;
            } else {
                std::os::unix::fs::lchown(&p, Some(u.uid), Some(u.gid))
                    .with_context(|| format!("chown {}", p.display()))?;
            }
        }
    }
    Ok(())
}
