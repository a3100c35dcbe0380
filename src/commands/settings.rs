//! `get node|formation ...` and `show standby-names`: one value each out
//! of the monitor's `show settings` answer, which already lists every
//! formation, primary and node setting (one read, no second copy of it).

use anyhow::bail;
use pgpilot_proto::pb;
use serde_json::json;

use super::{connect, status_error};
use crate::cli::{Get, GetFormation, GetNode, Target};

pub async fn get(cmd: Get) -> anyhow::Result<()> {
    match cmd {
        Get::Node(GetNode::CandidatePriority {
            target,
            formation,
            name,
        }) => node_setting(&target, &formation.formation, &name, "candidate_priority").await,
        Get::Node(GetNode::ReplicationQuorum {
            target,
            formation,
            name,
        }) => node_setting(&target, &formation.formation, &name, "replication_quorum").await,
        Get::Formation(GetFormation::NumberSyncStandbys { target, formation }) => {
            let formation = formation.formation;
            let settings = read(&target, &formation).await?;
            let value = find(&settings, "formation", &formation, "number_sync_standbys")
                .ok_or_else(|| {
                    anyhow::anyhow!("the monitor lists no number_sync_standbys for {formation:?}")
                })?;
            print_value(&target, &formation, None, "number_sync_standbys", value)
        }
    }
}

/// `show standby-names`: what the formation's primary must apply.
pub async fn standby_names(target: &Target, formation: &str) -> anyhow::Result<()> {
    let settings = read(target, formation).await?;
    let Some(s) = settings
        .iter()
        .find(|s| s.context == "primary" && s.setting == "synchronous_standby_names")
    else {
        bail!(
            "formation {formation:?} has no writable primary right now, so no \
             synchronous_standby_names applies; see `pgpilot show state`"
        );
    };
    let value = unquote(&s.value);
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "formation": formation, "primary": s.name,
                "synchronous_standby_names": value,
            }))?
        );
    } else {
        println!("{value}");
    }
    Ok(())
}

async fn node_setting(
    target: &Target,
    formation: &str,
    name: &str,
    setting: &str,
) -> anyhow::Result<()> {
    let settings = read(target, formation).await?;
    let Some(value) = find(&settings, "node", name, setting) else {
        let mut names: Vec<&str> = settings
            .iter()
            .filter(|s| s.context == "node")
            .map(|s| s.name.as_str())
            .collect();
        names.dedup();
        bail!(
            "formation {formation:?} has no node named {name:?}; its nodes are {}: pass one of \
             them (see `pgpilot show state`)",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    print_value(target, formation, Some(name), setting, value)
}

async fn read(target: &Target, formation: &str) -> anyhow::Result<Vec<pb::Setting>> {
    let mut client = connect(target).await?;
    Ok(client
        .show_settings(pb::ShowSettingsRequest {
            formation: formation.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .settings)
}

/// The value of one setting of `show settings`.
fn find<'a>(
    settings: &'a [pb::Setting],
    context: &str,
    name: &str,
    setting: &str,
) -> Option<&'a str> {
    settings
        .iter()
        .find(|s| s.context == context && s.name == name && s.setting == setting)
        .map(|s| s.value.as_str())
}

/// `show settings` quotes synchronous_standby_names as postgresql.conf
/// would; one value on its own needs no quotes.
fn unquote(v: &str) -> &str {
    v.strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(v)
}

/// The value alone, or a JSON object with it typed (numbers and booleans
/// as such).
fn print_value(
    target: &Target,
    formation: &str,
    node: Option<&str>,
    setting: &str,
    value: &str,
) -> anyhow::Result<()> {
    if target.json {
        let typed: serde_json::Value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
        let mut out = json!({"formation": formation, setting: typed});
        if let Some(name) = node {
            out["name"] = name.into();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(context: &str, name: &str, setting: &str, value: &str) -> pb::Setting {
        pb::Setting {
            context: context.into(),
            name: name.into(),
            setting: setting.into(),
            value: value.into(),
        }
    }

    #[test]
    fn finds_one_setting_by_context_name_and_setting() {
        let all = [
            s("formation", "default", "number_sync_standbys", "1"),
            s("node", "a", "candidate_priority", "50"),
            s("node", "b", "candidate_priority", "70"),
            s("node", "b", "replication_quorum", "true"),
        ];
        assert_eq!(find(&all, "node", "b", "candidate_priority"), Some("70"));
        assert_eq!(
            find(&all, "formation", "default", "number_sync_standbys"),
            Some("1")
        );
        assert_eq!(find(&all, "node", "c", "candidate_priority"), None);
    }

    #[test]
    fn standby_names_lose_their_quotes() {
        assert_eq!(
            unquote("'ANY 1 (pgpilot_node_2)'"),
            "ANY 1 (pgpilot_node_2)"
        );
        assert_eq!(unquote("''"), "");
        assert_eq!(unquote("plain"), "plain");
    }
}
