//! Certificates for the TLS tests, made afresh with rcgen in a folder: a CA, a server certificate
//! it signs for `localhost` and `127.0.0.1`, a client certificate it signs, and a second,
//! unrelated CA with a client certificate of its own (what a stranger would hold). Every
//! certificate is valid from a day ago to a day ahead; keys are ECDSA P-256, written as PKCS#8
//! PEM.
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The files of a test's public-key infrastructure.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster's CA certificate.
    pub ca: PathBuf,
    /// The coordinator's certificate (`localhost`, `127.0.0.1`), signed by `ca`.
    pub server: Pair,
    /// A worker's certificate, signed by `ca`.
    pub client: Pair,
    /// An unrelated CA's certificate.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub other_client: Pair,
}

fn validity(p: &mut CertificateParams) {
    let day = rcgen::date_time_ymd(1970, 1, 2) - rcgen::date_time_ymd(1970, 1, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    let now = rcgen::date_time_ymd(1970, 1, 1) + now;
    p.not_before = now - day;
    p.not_after = now + day;
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

/// A self-signed CA named `name`: its PEM file and the issuer to sign with.
fn new_ca(dir: &Path, name: &str) -> (PathBuf, Issuer<'static, KeyPair>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("no names");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p);
    let key = KeyPair::generate().expect("a key");
    let cert = p.self_signed(&key).expect("a CA certificate");
    let file = write(dir, &format!("{name}.pem"), &cert.pem());
    (file, Issuer::new(p, key))
}

/// A leaf certificate for `names` with `usage`, signed by `issuer`.
fn leaf(
    dir: &Path,
    name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'static, KeyPair>,
) -> Pair {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("valid names");
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p);
    let key = KeyPair::generate().expect("a key");
    let cert = p.signed_by(&key, issuer).expect("a signed certificate");
    Pair {
        cert: write(dir, &format!("{name}.crt.pem"), &cert.pem()),
        key: write(dir, &format!("{name}.key.pem"), &key.serialize_pem()),
    }
}

/// Makes the certificates in `dir`.
pub fn make(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).expect("the certificates' folder");
    let (ca_file, ca) = new_ca(dir, "cluster-ca");
    let (other_file, other) = new_ca(dir, "other-ca");
    Pki {
        ca: ca_file,
        server: leaf(
            dir,
            "coordinator",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        ),
        client: leaf(
            dir,
            "worker",
            &["worker.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        ),
        other_ca: other_file,
        other_client: leaf(
            dir,
            "stranger",
            &["stranger.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &other,
        ),
    }
}
