//! Hosts on one machine: network namespaces joined by a bridge, each with its own address, so
//! that the coordinator and the workers talk over real (virtual) links that a test can cut and
//! restore. Needs CAP_NET_ADMIN (root); [`Net::new`] says so when it cannot create them.
//!
//! Host `i` is namespace `<prefix>n<i>` with address `10.<a>.<b>.<i+1>/24` on interface
//! `<prefix>p<i>`, whose other end `<prefix>h<i>` is attached to the bridge `<prefix>b` in the
//! root namespace. Cutting host `i`'s link sets `<prefix>h<i>` down: its packets are dropped
//! silently, as when a cable or a switch port fails. Everything is removed when the [`Net`] is
//! dropped. [`Net::cap`] limits a host's bandwidth with a token bucket on both ends.
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A set of hosts.
pub struct Net {
    prefix: String,
    /// The hosts' addresses, host 0 first.
    pub addrs: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Creates `hosts` hosts; an error (saying what failed) when this process may not.
    pub fn new(hosts: usize) -> Result<Net, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id() % 4096) * 16 + n % 16;
        let prefix = format!("e{id}");
        let (a, b) = (100 + id / 250 % 150, id % 250);
        let mut net = Net {
            prefix: prefix.clone(),
            addrs: Vec::new(),
        };
        let bridge = format!("{prefix}b");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..hosts {
            let (ns, host, peer) = (
                format!("{prefix}n{i}"),
                format!("{prefix}h{i}"),
                format!("{prefix}p{i}"),
            );
            let addr = format!("10.{a}.{b}.{}", i + 1);
            net.addrs.push(addr.clone());
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &bridge])?;
            ip(&["link", "set", &host, "up"])?;
            let cidr = format!("{addr}/24");
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", &peer])?;
            ip(&["-n", &ns, "link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// A command running `program` inside host `i`.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}n{i}", self.prefix)])
            .arg(program);
        c
    }

    /// Caps host `i`'s link at `bits_per_second` in both directions (a token bucket, `tc
    /// tbf`, on each end of its veth pair; 10 ms of traffic may burst).
    pub fn cap(&self, i: usize, bits_per_second: u64) {
        let rate = format!("{bits_per_second}bit");
        let burst = (bits_per_second / 8 / 100).max(64 * 1024).to_string();
        let (ns, host, peer) = (
            format!("{}n{i}", self.prefix),
            format!("{}h{i}", self.prefix),
            format!("{}p{i}", self.prefix),
        );
        for (netns, dev) in [(None, host), (Some(ns), peer)] {
            let mut c = Command::new("tc");
            if let Some(n) = &netns {
                c.args(["-n", n]);
            }
            let out = c
                .args([
                    "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", &rate,
                ])
                .args(["burst", &burst, "latency", "100ms"])
                .output()
                .expect("run tc");
            assert!(
                out.status.success(),
                "tc on {dev}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The name of host `i`'s interface (inside its namespace).
    pub fn iface(&self, i: usize) -> String {
        format!("{}p{i}", self.prefix)
    }

    /// Cuts host `i`'s link (packets dropped silently).
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &format!("{}h{i}", self.prefix), "down"]).expect("cut the link");
    }

    /// Restores host `i`'s link.
    pub fn restore(&self, i: usize) {
        ip(&["link", "set", &format!("{}h{i}", self.prefix), "up"]).expect("restore the link");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.addrs.len() {
            let _ = ip(&["netns", "del", &format!("{}n{i}", self.prefix)]);
            let _ = ip(&["link", "del", &format!("{}h{i}", self.prefix)]);
        }
        let _ = ip(&["link", "del", &format!("{}b", self.prefix)]);
    }
}
