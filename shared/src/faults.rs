//! Named fault points: places in the coordinator and the worker where a fault-injection test can
//! stop a process at an exact moment, to kill it there with a real signal, or slow it down.
//!
//! Off unless the environment variable [`FAULT_ENV`] is set, as `POINT[@N][:ACTION]`:
//! - `POINT` is one of the names passed to [`point`] (listed in `tests/src/faults.rs`);
//! - `N` (default 1) is which occurrence of that point triggers: the Nth time this process
//!   reaches it;
//! - `ACTION` is `halt` (the default): print `fault point POINT@N reached (pid P)` on stderr and
//!   stop the calling thread for good, so that the test, which waits for that line, kills the
//!   process while it stands exactly there; or `delay=MS`: print the same line and go on after
//!   MS milliseconds (a straggler).
//!
//! A malformed value is reported once on stderr and ignored, so a typo in a test's
//! environment cannot change what a production process does beyond that warning.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable naming the fault point.
pub const FAULT_ENV: &str = "ECG_FAULT_AT";

/// What happens at the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop the thread for good (the test kills the process).
    Halt,
    /// Go on after this long.
    Delay(Duration),
}

/// A parsed [`FAULT_ENV`] value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The point's name.
    pub point: String,
    /// Which occurrence triggers (1-based).
    pub nth: u64,
    /// What it does.
    pub action: Action,
}

impl Fault {
    /// Parses `POINT[@N][:ACTION]`.
    pub fn parse(s: &str) -> Result<Fault, String> {
        let (head, action) = match s.split_once(':') {
            Some((h, a)) => (h, Some(a)),
            None => (s, None),
        };
        let (point, nth) = match head.split_once('@') {
            Some((p, n)) => (
                p,
                n.parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("occurrence `{n}` is not a positive integer"))?,
            ),
            None => (head, 1),
        };
        if point.is_empty()
            || !point
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "point name `{point}` is empty or not [A-Za-z0-9._-]"
            ));
        }
        let action = match action {
            None | Some("halt") => Action::Halt,
            Some(a) => match a.strip_prefix("delay=").map(str::parse::<u64>) {
                Some(Ok(ms)) => Action::Delay(Duration::from_millis(ms)),
                _ => return Err(format!("action `{a}` is neither `halt` nor `delay=MS`")),
            },
        };
        Ok(Fault {
            point: point.to_string(),
            nth,
            action,
        })
    }
}

struct Armed {
    fault: Fault,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var(FAULT_ENV).ok()?;
            match Fault::parse(&v) {
                Ok(fault) => Some(Armed {
                    fault,
                    seen: AtomicU64::new(0),
                }),
                Err(e) => {
                    eprintln!("warning: {FAULT_ENV}={v:?} ignored: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// Passes fault point `name`: nothing unless [`FAULT_ENV`] names it (see the module doc).
pub fn point(name: &str) {
    let Some(a) = armed() else { return };
    if a.fault.point != name {
        return;
    }
    let n = a.seen.fetch_add(1, Ordering::SeqCst) + 1;
    if n != a.fault.nth {
        return;
    }
    eprintln!(
        "fault point {name}@{n} reached (pid {})",
        std::process::id()
    );
    match a.fault.action {
        Action::Halt => loop {
            std::thread::park();
        },
        Action::Delay(d) => std::thread::sleep(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_point_occurrence_and_action() {
        assert_eq!(
            Fault::parse("worker.upload").unwrap(),
            Fault {
                point: "worker.upload".into(),
                nth: 1,
                action: Action::Halt
            }
        );
        let f = Fault::parse("coord.reduce@7:delay=250").unwrap();
        assert_eq!((f.point.as_str(), f.nth), ("coord.reduce", 7));
        assert_eq!(f.action, Action::Delay(Duration::from_millis(250)));
        assert_eq!(Fault::parse("a@3:halt").unwrap().action, Action::Halt);
    }

    #[test]
    fn refuses_malformed_values_with_the_reason() {
        assert!(Fault::parse("a@0").unwrap_err().contains("`0`"));
        assert!(Fault::parse("a@x").unwrap_err().contains("`x`"));
        assert!(Fault::parse("").unwrap_err().contains("empty"));
        assert!(Fault::parse("a b").unwrap_err().contains("`a b`"));
        assert!(Fault::parse("a:sleep").unwrap_err().contains("`sleep`"));
        assert!(Fault::parse("a:delay=x").unwrap_err().contains("delay=x"));
    }
}
