//! What every ecg-cluster binary does around its command: logging to stderr (level from
//! `RUST_LOG`, default `info`) and turning the command's result into an exit code with the
//! error printed on one line.
use std::fmt::Display;
use std::process::ExitCode;

/// Sets up `tracing` to write to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Success, or the error printed as `error: …` and exit code 1.
pub fn exit_code<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The variable Candle reads, once, to size the thread pool of its element-wise operations.
pub const CANDLE_THREADS_VAR: &str = "CANDLE_NUM_THREADS";

/// Runs Candle's element-wise operations on the calling thread, unless the user set
/// `CANDLE_NUM_THREADS`. Candle 0.11 otherwise fans them out to a pool of its own whose threads
/// spin while they wait, and which competes for the cores with the rayon threads of our
/// convolutions: on 2 cores that made a small network's training steps about 5x slower (see
/// bench/model.sh for the full-size figures).
///
/// # Safety
/// It sets an environment variable, which is only sound while no other thread can read the
/// environment: call it first thing in `main`, before any thread is started.
#[allow(unsafe_code)]
pub unsafe fn keep_candle_elementwise_on_caller() {
    if std::env::var_os(CANDLE_THREADS_VAR).is_none() {
        // SAFETY: the caller guarantees that the process has a single thread.
        unsafe { std::env::set_var(CANDLE_THREADS_VAR, "1") };
    }
}

/// Keeps memory freed by the process for its next allocations instead of returning it to the
/// kernel. A training step allocates and frees tensors of tens of megabytes; glibc serves those
/// with `mmap` and unmaps them on free, so every step page-faults and zeroes them anew (a third
/// of a full-size step's time on 2 cores; bench/model.sh). Turns off glibc's `mmap` for large
/// blocks and its heap trimming. Does nothing on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only changes the allocator's tuning parameters, under its own lock;
    // 0 (no mmap) and -1 (never trim) are documented values of these two.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

/// An error with its chain of causes (`transport error: tcp connect error: Connection refused`).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The cluster token in the file `path` (surrounding white space removed); an unreadable or
/// empty file is an error naming it.
pub fn read_token_file(path: &std::path::Path) -> crate::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(crate::Error::Config(format!(
            "token file {}: the file is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// Checks that `addr` is `host:port` (optionally after `http://` or `https://`): a host name,
/// an IPv4 address or a bracketed IPv6 address, then a port from 1 to 65535. Returns it as
/// given; the error says what is wrong with it. For addresses to connect to: port 0 is
/// refused (see [`listen_host_port`]).
pub fn host_port(addr: &str) -> std::result::Result<String, String> {
    check_host_port(addr, false)
}

/// [`host_port`] for an address to listen on, where port 0 (any free port) is allowed.
pub fn listen_host_port(addr: &str) -> std::result::Result<String, String> {
    check_host_port(addr, true)
}

fn check_host_port(addr: &str, port_zero: bool) -> std::result::Result<String, String> {
    let rest = match addr.split_once("://") {
        None => addr,
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => return Err(format!("`{scheme}://` is not http:// or https://")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err("expected host:port".into());
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err("no port: expected host:port".into());
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    if host.is_empty() || (host.contains(':') && !bracketed) {
        return Err("expected host:port (an IPv6 address goes in brackets: [::1]:50051)".into());
    }
    match port.parse::<u16>() {
        Ok(0) if !port_zero => Err("port 0 is not a port to connect to".into()),
        Ok(_) => Ok(addr.to_string()),
        Err(_) => Err(format!("`{port}` is not a port (1 to 65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::with_causes;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("transport error")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_are_appended_once_each() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(with_causes(&e), "transport error: connection refused");
        let plain = std::io::Error::other("alone");
        assert_eq!(with_causes(&plain), "alone");
    }

    #[test]
    fn token_files_are_trimmed_and_an_empty_one_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("token");
        std::fs::write(&good, "  s3cret\n").unwrap();
        assert_eq!(super::read_token_file(&good).unwrap(), "s3cret");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let err = super::read_token_file(&empty).unwrap_err().to_string();
        assert!(err.contains("the file is empty"), "{err}");
        assert!(err.contains(&empty.display().to_string()), "{err}");
        let missing = super::read_token_file(&dir.path().join("absent")).unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");
    }

    #[test]
    fn host_port_accepts_addresses_and_names_what_is_wrong() {
        use super::{host_port, listen_host_port};
        for good in [
            "127.0.0.1:50051",
            "node-3.cluster:7000",
            "[::1]:50051",
            "http://10.0.0.2:50051",
            "https://coordinator:443/",
        ] {
            assert_eq!(host_port(good).as_deref(), Ok(good));
        }
        for (bad, want) in [
            ("localhost", "no port"),
            ("127.0.0.1:http", "`http` is not a port"),
            ("127.0.0.1:70000", "`70000` is not a port"),
            ("127.0.0.1:0", "port 0"),
            (":50051", "host:port"),
            ("::1:50051", "brackets"),
            ("grpc://x:1", "`grpc://`"),
            ("a b:1", "host:port"),
            ("", "host:port"),
        ] {
            let e = host_port(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: expected `{want}` in {e}");
        }
        assert!(listen_host_port("0.0.0.0:0").is_ok());
        assert!(listen_host_port("0.0.0.0").is_err());
    }
}
