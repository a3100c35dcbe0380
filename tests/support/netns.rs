//! Network namespaces for the fault suite (tests/faults): every data node
//! and the monitor run in a namespace of their own, each joined by a veth
//! pair to one bridge in the root namespace, which has an address too, so
//! the test process (writers, checkers, `pgpilot show ...`) reaches every
//! namespace from the root one. Partitions are nftables rules inside one
//! node's namespace that drop its traffic to and from chosen addresses
//! only: the test process keeps reaching every node.
//!
//! Names are unique and recognisable: `pf<pid in hex>x<counter>` then one
//! letter per role (a Linux interface name has at most 15 characters).
//! [`Net`]'s `Drop` deletes everything it made, also when the test fails,
//! and [`Net::new`] first sweeps objects left by a test process that no
//! longer runs (a run killed with SIGKILL). Every subnet is a private
//! 10.A.B.0/24 of its own (A from the pid, B from the counter).
//!
//! Processes run in a namespace through `ip netns exec NS PROGRAM`, which
//! execs PROGRAM: the child's pid is the program's own (checked by
//! [`command`]'s users, which signal it directly).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where a process runs: a network namespace and its address there.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: String,
    pub ip: String,
}

/// The command that runs `program` on `host` (in its namespace), or
/// plainly when there is no host.
pub fn command(host: Option<&Host>, program: &str) -> Command {
    match host {
        None => Command::new(program),
        Some(h) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &h.netns, program]);
            c
        }
    }
}

/// The address processes on `host` listen on and are reached at.
pub fn ip(host: Option<&Host>) -> &str {
    host.map_or("127.0.0.1", |h| h.ip.as_str())
}

/// Rewrites the values of `--hostname`, `--listen-addresses` and
/// `--http-listen` in `create postgres` arguments to `host`'s address.
pub fn place_keeper_args(args: &mut [String], host: &Host) {
    for i in 1..args.len() {
        match args[i - 1].as_str() {
            "--hostname" | "--listen-addresses" => args[i] = host.ip.clone(),
            "--http-listen" => {
                let port = args[i].rsplit_once(':').map_or("0", |(_, p)| p).to_string();
                args[i] = format!("{}:{port}", host.ip);
            }
            _ => {}
        }
    }
}

/// True when this process may create network namespaces (root).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a command of the network setup, panicking with its stderr on
/// failure.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e} (scripts/install-deps installs iproute2)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like [`run`], ignoring failure (teardown of what may be gone already).
fn try_run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn stdout_of(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The pid a name of ours embeds (`pf<hex pid>x...`), if it is one.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("pf")?;
    let (hex, _) = rest.split_once('x')?;
    i32::from_str_radix(hex, 16).ok()
}

/// Deletes namespaces and links of ours whose test process is gone.
fn sweep_stale() {
    let stale = |name: &str| {
        owner_pid(name).is_some_and(|pid| {
            pid != std::process::id() as i32
                && !std::path::Path::new(&format!("/proc/{pid}")).is_dir()
        })
    };
    for line in stdout_of(&["ip", "netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if stale(name) {
            eprintln!("removing stale network namespace {name}");
            try_run(&["ip", "netns", "delete", name]);
        }
    }
    for line in stdout_of(&["ip", "-o", "link", "show"]).lines() {
        // "12: pf1a2bx0b: <...>" or "13: pf1a2bx0a@if12: <...>"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or("");
        if stale(name) {
            eprintln!("removing stale link {name}");
            try_run(&["ip", "link", "delete", name]);
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One test's network: a bridge and one namespace per named host.
pub struct Net {
    prefix: String,
    bridge: String,
    /// The root namespace's address on the bridge (where the test process
    /// connects from).
    pub gateway: String,
    hosts: Vec<(String, Host)>,
}

impl Net {
    /// A bridge with an address, and one namespace per name (each with
    /// `lo` up and one veth on the bridge). Names are one letter each.
    pub fn new(names: &[&str]) -> Net {
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("pf{pid:x}x{n:x}");
        // The longest name is the veth peer: prefix, a letter and "p".
        assert!(prefix.len() <= 13, "interface name too long: {prefix}");
        let subnet = format!("10.{}.{}", 20 + pid % 200, n % 250);
        let mut net = Net {
            bridge: format!("{prefix}0"),
            gateway: format!("{subnet}.1"),
            prefix,
            hosts: Vec::new(),
        };
        // From here on, Drop removes whatever was made.
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.gateway),
            "dev",
            &net.bridge,
        ]);
        run(&["ip", "link", "set", &net.bridge, "up"]);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(name.len(), 1, "one-letter host names: {name}");
            let ns = format!("{}{name}", net.prefix);
            let ip = format!("{subnet}.{}", i + 2);
            let veth = format!("{}{name}", net.prefix);
            let peer = format!("{}{name}p", net.prefix);
            run(&["ip", "netns", "add", &ns]);
            net.hosts.push((
                name.to_string(),
                Host {
                    netns: ns.clone(),
                    ip: ip.clone(),
                },
            ));
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
            ]);
            run(&["ip", "link", "set", &veth, "master", &net.bridge]);
            run(&["ip", "link", "set", &veth, "up"]);
            run(&["ip", "link", "set", &peer, "netns", &ns]);
            let exec = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &ns];
                all.extend_from_slice(args);
                run(&all);
            };
            exec(&["ip", "link", "set", "lo", "up"]);
            exec(&["ip", "link", "set", &peer, "name", "eth0"]);
            exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            exec(&["ip", "link", "set", "eth0", "up"]);
        }
        net
    }

    pub fn host(&self, name: &str) -> &Host {
        &self
            .hosts
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no host {name}"))
            .1
    }

    /// Drops every packet between host `from` and each of `to` (inside
    /// `from`'s namespace, on its own link only), both ways. Replaces any
    /// earlier cut of `from`.
    pub fn cut(&self, from: &str, to: &[&str]) {
        self.heal(from);
        let addrs: Vec<&str> = to.iter().map(|n| self.host(n).ip.as_str()).collect();
        let set = addrs.join(", ");
        let rules = format!(
            "table inet pgpilot_cut {{\n\
             chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
             chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
        let ns = &self.host(from).netns;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft (scripts/install-deps installs nftables)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("network: cut {from} off from {to:?}");
    }

    /// Removes the cut of host `from`, if any.
    pub fn heal(&self, from: &str) {
        let ns = &self.host(from).netns;
        if try_run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "delete",
            "table",
            "inet",
            "pgpilot_cut",
        ]) {
            eprintln!("network: healed {from}");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The processes in the namespaces are gone by now (the fixtures
        // are declared after the Net, so they drop first); a namespace
        // with a process left in it lives on until that exits, and the
        // next sweep removes its name.
        for (_, h) in &self.hosts {
            try_run(&["ip", "netns", "delete", &h.netns]);
        }
        for (name, _) in &self.hosts {
            try_run(&["ip", "link", "delete", &format!("{}{name}", self.prefix)]);
        }
        try_run(&["ip", "link", "delete", &self.bridge]);
    }
}
