//! The keeper's hooks on real processes: a `pre_promote` that fails keeps
//! the candidate from promoting (the monitor records why, the standby
//! stays in recovery); once it succeeds the candidate promotes, and
//! `on_role_change` is called with the node, the formation, the old and
//! new role and the new timeline.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
/// How long the test watches a refused promotion stay refused.
const REFUSED_FOR: Duration = Duration::from_secs(5);

/// Adds the hooks to node `k`'s keeper.toml (its keeper not running).
fn add_hooks(k: &KeeperProc, dir: &Path) {
    let path = pgpilot_keeper::files::config_path(&k.pgdata);
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let d = dir.display();
    // A shell string: refuses until the file `allow` exists.
    t.insert(
        "pre_promote".into(),
        format!("echo \"pre_promote $1 $2 $PGPILOT_NODE_NAME\" >> {d}/calls; test -f {d}/allow")
            .into(),
    );
    // A list: the keeper appends the old and new role.
    std::fs::write(
        dir.join("role.sh"),
        "echo \"$PGPILOT_NODE_ID $PGPILOT_NODE_NAME $PGPILOT_FORMATION $PGPILOT_OLD_ROLE \
         $PGPILOT_NEW_ROLE $PGPILOT_NEW_STATE $PGPILOT_TIMELINE $1 $2\" >> \"$(dirname \"$0\")/roles\"\n",
    )
    .unwrap();
    t.insert(
        "on_role_change".into(),
        toml::Value::Array(vec![
            "/bin/sh".into(),
            dir.join("role.sh").display().to_string().into(),
        ]),
    );
    t.insert("hook_timeout".into(), "5s".into());
    std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_pre_promote_stops_the_promotion_and_on_role_change_is_told() {
    let dir = TestDir::new("k-hooks");
    let monitor = MonitorProc::start(&dir).await;
    let (mut a, mut b) = primary_and_secondary(&dir, &monitor).await;
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    // b's keeper restarts with the hooks (its PostgreSQL runs on and is
    // adopted).
    b.kill_keeper();
    add_hooks(&b, &hooks);
    b.run();
    wait_state(&monitor, "b", "secondary", STEP).await;

    // The primary dies: b is the only candidate, and its hook refuses.
    a.kill9();
    eventually("the refusal recorded by the monitor", STEP, || async {
        monitor
            .events()
            .await
            .into_iter()
            .find(|e| e.contains("pre_promote hook"))
    })
    .await;
    let refused = Instant::now();
    let calls = lines(&hooks.join("calls"));
    assert!(
        calls.first().map(String::as_str) == Some("pre_promote standby primary b"),
        "{calls:?}"
    );
    // It stays refused: b never promotes while the hook fails.
    while refused.elapsed() < REFUSED_FOR {
        let in_recovery = b.query("SELECT pg_is_in_recovery()::text").await;
        assert_eq!(
            in_recovery.ok().flatten().as_deref(),
            Some("true"),
            "b promoted although its pre_promote hook failed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tries = lines(&hooks.join("calls")).len();
    eprintln!("pre_promote refused {tries} time(s) in {REFUSED_FOR:?}");
    assert!(lines(&hooks.join("roles")).is_empty());

    // The hook lets it: b promotes, and on_role_change hears of it.
    std::fs::write(hooks.join("allow"), "").unwrap();
    let allowed = Instant::now();
    new_primary_among(&monitor, &[&b], STEP).await;
    eprintln!(
        "b writable {} ms after its hook allowed the promotion",
        allowed.elapsed().as_millis()
    );
    let line = eventually("on_role_change called", STEP, || async {
        lines(&hooks.join("roles")).into_iter().next()
    })
    .await;
    eprintln!("on_role_change: {line}");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        f[..6],
        ["2", "b", "default", "standby", "primary", "wait_primary"],
        "{line}"
    );
    let timeline: u32 = f[6].parse().unwrap_or_else(|_| panic!("{line}"));
    assert!(timeline >= 2, "{line}");
    assert_eq!(f[7..], ["standby", "primary"], "{line}");
    let _ = &mut a;
}
