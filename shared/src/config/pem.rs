//! PEM files named by the TLS settings (`cluster.tls_*` in `cluster.toml`, the `--tls-*` flags of
//! the worker and of `coordinator status`): read once at start and checked to hold what the
//! setting needs (certificates, or one unencrypted private key), so that a wrong or unreadable
//! file is reported with the setting's name and the file's path before anything else happens.
//! The cryptographic parse itself is left to rustls. Messages never quote the file's contents.
use std::path::Path;

use crate::{Error, Result};

/// What a PEM file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// One or more `CERTIFICATE` blocks (a chain, or CA certificates).
    Certificates,
    /// A `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY` block, unencrypted.
    PrivateKey,
}

impl PemKind {
    fn noun(self) -> &'static str {
        match self {
            PemKind::Certificates => "a PEM certificate",
            PemKind::PrivateKey => "a PEM private key",
        }
    }
}

/// Reads the PEM file `path` given as `setting` (`cluster.tls_cert`, `--tls-ca`, …) and checks
/// that it holds `kind`. The error names the setting and the file.
pub fn read_pem(setting: &str, path: &Path, kind: PemKind) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Config(format!("{setting}: cannot read {}: {e}", path.display())))?;
    let bad = |msg: String| {
        Err(Error::Config(format!(
            "{setting}: {} is not {}: {msg}",
            path.display(),
            kind.noun()
        )))
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return bad("the file is binary (DER?); PEM is text with -----BEGIN lines".into());
    };
    let labels = match blocks(text) {
        Ok(l) => l,
        Err(msg) => return bad(msg),
    };
    if labels.is_empty() {
        return bad("no -----BEGIN …----- line".into());
    }
    match kind {
        PemKind::Certificates => {
            if !labels.iter().any(|l| l == "CERTIFICATE") {
                return bad(format!(
                    "it holds no CERTIFICATE (found {})",
                    labels.join(", ")
                ));
            }
        }
        PemKind::PrivateKey => {
            if labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY") {
                return bad(
                    "the key is encrypted; give it unencrypted (and readable by this user only)"
                        .into(),
                );
            }
            let keys = labels
                .iter()
                .filter(|l| {
                    matches!(
                        l.as_str(),
                        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
                    )
                })
                .count();
            if keys != 1 {
                return bad(format!(
                    "it must hold exactly one PRIVATE KEY block (found {})",
                    labels.join(", ")
                ));
            }
        }
    }
    Ok(bytes)
}

/// The labels of the PEM blocks of `text`, checking that every block is closed by its own
/// `END` line and has a base64 body.
fn blocks(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut labels = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let n = n + 1;
        if let Some(label) = marker(line, "BEGIN") {
            if let Some((l, at)) = &open {
                return Err(format!(
                    "line {n}: BEGIN {label} inside {l} (opened on line {at})"
                ));
            }
            open = Some((label.to_string(), n));
        } else if let Some(label) = marker(line, "END") {
            match open.take() {
                Some((l, _)) if l == label => labels.push(l),
                Some((l, at)) => {
                    return Err(format!(
                        "line {n}: END {label} closes {l} (opened on line {at})"
                    ));
                }
                None => return Err(format!("line {n}: END {label} without BEGIN")),
            }
        } else if let Some((l, _)) = &open {
            if line.contains(':') {
                return Err(format!(
                    "line {n}: {l} has headers (an encrypted legacy key?)"
                ));
            }
            let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
            if !line.chars().all(base64) {
                return Err(format!("line {n}: the body of {l} is not base64"));
            }
        }
    }
    if let Some((l, at)) = open {
        return Err(format!("{l} opened on line {at} is never closed"));
    }
    Ok(labels)
}

/// The PEM files of a client's `--tls-ca`, `--tls-cert`, `--tls-key` and `--tls-domain`
/// flags, read and checked. `Debug` never shows the key.
#[derive(Clone)]
pub struct ClientTlsPem {
    /// The CA certificate(s) the coordinator's certificate must be signed by.
    pub ca: Vec<u8>,
    /// The client certificate chain and its key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify in the coordinator's certificate; `None`: the host of the address.
    pub domain: Option<String>,
}

impl std::fmt::Debug for ClientTlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTlsPem")
            .field("ca_bytes", &self.ca.len())
            .field("client_certificate", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

impl ClientTlsPem {
    /// Reads the client's TLS flags: `None` when none is given (plain text). `--tls-cert` and
    /// `--tls-key` go together, and every flag needs `--tls-ca`; errors name the flag and the
    /// file.
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        domain: Option<&str>,
    ) -> Result<Option<Self>> {
        let Some(ca) = ca else {
            if cert.is_some() || key.is_some() || domain.is_some() {
                return Err(Error::Config(
                    "--tls-cert, --tls-key and --tls-domain need --tls-ca (the PEM CA that \
                     signed the coordinator's certificate)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((
                read_pem("--tls-cert", c, PemKind::Certificates)?,
                read_pem("--tls-key", k, PemKind::PrivateKey)?,
            )),
            (Some(_), None) => {
                return Err(Error::Config(
                    "--tls-cert needs --tls-key (its private key)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "--tls-key needs --tls-cert (its certificate)".into(),
                ));
            }
        };
        if domain.is_some_and(|d| d.trim().is_empty()) {
            return Err(Error::Config("--tls-domain: must not be empty".into()));
        }
        Ok(Some(ClientTlsPem {
            ca: read_pem("--tls-ca", ca, PemKind::Certificates)?,
            identity,
            domain: domain.map(str::to_string),
        }))
    }
}

/// `X` of `-----BEGIN X-----` (or `END`).
fn marker<'a>(line: &'a str, which: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(which)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\nAbC+/9==\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";

    fn file(dir: &tempfile::TempDir, name: &str, text: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn err(setting: &str, path: &Path, kind: PemKind) -> String {
        read_pem(setting, path, kind).unwrap_err().to_string()
    }

    #[test]
    fn certificates_and_keys_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let chain = file(&dir, "chain.pem", format!("{CERT}{CERT}").as_bytes());
        let key = file(&dir, "key.pem", KEY.as_bytes());
        assert_eq!(
            read_pem("cluster.tls_cert", &chain, PemKind::Certificates).unwrap(),
            format!("{CERT}{CERT}").into_bytes()
        );
        assert!(read_pem("cluster.tls_key", &key, PemKind::PrivateKey).is_ok());
    }

    #[test]
    fn wrong_files_are_refused_with_the_setting_and_the_path_but_not_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = err("cluster.tls_cert", &missing, PemKind::Certificates);
        assert!(
            e.contains("cluster.tls_cert") && e.contains("missing.pem"),
            "{e}"
        );

        let text = file(&dir, "notes.txt", b"secret-looking words\n");
        let e = err("--tls-ca", &text, PemKind::Certificates);
        assert!(e.contains("--tls-ca") && e.contains("notes.txt"), "{e}");
        assert!(
            e.contains("not a PEM certificate") && !e.contains("secret"),
            "{e}"
        );

        let der = file(&dir, "cert.der", &[0x30, 0x82, 0xff, 0xfe]);
        assert!(err("x", &der, PemKind::Certificates).contains("binary"));

        let key = file(&dir, "key.pem", KEY.as_bytes());
        let e = err("cluster.tls_cert", &key, PemKind::Certificates);
        assert!(e.contains("no CERTIFICATE (found PRIVATE KEY)"), "{e}");
        let cert = file(&dir, "cert.pem", CERT.as_bytes());
        let e = err("cluster.tls_key", &cert, PemKind::PrivateKey);
        assert!(e.contains("exactly one PRIVATE KEY"), "{e}");

        let two = file(&dir, "two.pem", format!("{KEY}{KEY}").as_bytes());
        assert!(err("k", &two, PemKind::PrivateKey).contains("exactly one"));
        let enc = KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        let enc = file(&dir, "enc.pem", enc.as_bytes());
        assert!(err("k", &enc, PemKind::PrivateKey).contains("encrypted"));
        let open = file(&dir, "open.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n");
        assert!(err("c", &open, PemKind::Certificates).contains("never closed"));
        let mixed = CERT.replace("END CERTIFICATE", "END PRIVATE KEY");
        let mixed = file(&dir, "mixed.pem", mixed.as_bytes());
        assert!(err("c", &mixed, PemKind::Certificates).contains("closes CERTIFICATE"));
        let body = CERT.replace("AbC+/9==", "not base64!");
        let body = file(&dir, "body.pem", body.as_bytes());
        assert!(err("c", &body, PemKind::Certificates).contains("not base64"));
    }

    #[test]
    fn client_flags_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let ca = file(&dir, "ca.pem", CERT.as_bytes());
        let cert = file(&dir, "cert.pem", CERT.as_bytes());
        let key = file(&dir, "key.pem", KEY.as_bytes());
        assert!(
            ClientTlsPem::from_flags(None, None, None, None)
                .unwrap()
                .is_none()
        );
        let plain = ClientTlsPem::from_flags(Some(&ca), None, None, None)
            .unwrap()
            .unwrap();
        assert!(plain.identity.is_none() && plain.domain.is_none());
        let mutual = ClientTlsPem::from_flags(Some(&ca), Some(&cert), Some(&key), Some("node1"))
            .unwrap()
            .unwrap();
        assert_eq!(mutual.domain.as_deref(), Some("node1"));
        let shown = format!("{mutual:?}");
        assert!(!shown.contains("MIGHAgEAMBMGByqGSM49"), "{shown}");
        let e = |r: Result<Option<ClientTlsPem>>| r.unwrap_err().to_string();
        assert!(
            e(ClientTlsPem::from_flags(
                None,
                Some(&cert),
                Some(&key),
                None
            ))
            .contains("need --tls-ca")
        );
        assert!(
            e(ClientTlsPem::from_flags(Some(&ca), Some(&cert), None, None))
                .contains("--tls-cert needs --tls-key")
        );
        assert!(
            e(ClientTlsPem::from_flags(Some(&ca), None, Some(&key), None))
                .contains("--tls-key needs --tls-cert")
        );
        let wrong = e(ClientTlsPem::from_flags(Some(&key), None, None, None));
        assert!(
            wrong.contains("--tls-ca") && wrong.contains("key.pem"),
            "{wrong}"
        );
    }
}
