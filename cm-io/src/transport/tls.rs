//! The TLS material of one process (SPEC.md §16): the trusted CAs, its own certificate and key,
//! the rustls configurations built from them, and their reloading.
//!
//! * One crypto provider, ring, passed explicitly to every builder (and installed as the
//!   process default by [`install_crypto_provider`], for anything that asks for the default).
//! * TLS 1.3 only; both sides present certificates (mutual TLS). A client's certificate is
//!   verified by rustls against the trusted CAs; *which* name it must carry depends on who it
//!   says it is and is checked after the handshake ([`super::handshake`]).
//! * [`Tls::reload`] re-reads the files (SIGHUP): new connections use the new material,
//!   established ones keep theirs; a file that does not load leaves the old material in use.
//! * Several CA certificates may be in `ssl_ca_file` at once (a CA rotation without a cut).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use cm_core::NodeId;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider every TLS object of the cluster uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default provider (idempotent; call once at start).
pub fn install_crypto_provider() {
    // Err means a provider is already installed (a second call, or a test harness): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the material of one identity is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Trusted CA certificates (PEM, one or more).
    pub ca: PathBuf,
    /// This identity's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// This identity's private key (PEM).
    pub key: PathBuf,
}

/// Material that could not be loaded; says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", .path.display())]
    Read {
        /// Which file it is (`CA file`, `certificate`, `private key`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{what} {}: {reason}", .path.display())]
    Pem {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (no PEM block of the right kind, bad base64, ...).
        reason: String,
    },
    /// rustls refused the combination (key does not match the certificate, bad CA, ...).
    #[error(
        "TLS material from {} / {} / {}: {reason}",
        .files.ca.display(),
        .files.cert.display(),
        .files.key.display()
    )]
    Config {
        /// The files.
        files: Box<TlsFiles>,
        /// rustls's reason.
        reason: String,
    },
}

/// One generation of loaded material.
#[derive(Debug)]
pub struct Material {
    /// For accepting connections (client certificates required).
    pub server: Arc<ServerConfig>,
    /// For dialing (presents our certificate).
    pub client: Arc<ClientConfig>,
    /// For an HTTP endpoint: our certificate; a client certificate of the cluster CA is
    /// verified when presented but not required (health and metrics need none, SPEC.md §16).
    pub http_server: Arc<ServerConfig>,
    /// Expiry (Unix seconds) of every certificate in use: ours first, then the CAs.
    pub not_after: Vec<(String, i64)>,
}

fn pem<T>(what: &'static str, path: &Path, r: Result<T, String>) -> Result<T, TlsError> {
    r.map_err(|reason| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM text; an error when there is none or a block is malformed.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(certs)
}

/// The private key of a PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block".to_owned(),
        e => format!("malformed PEM: {e}"),
    })
}

impl Material {
    /// Reads and checks the files and builds both rustls configurations. With `own` (the name
    /// this identity's certificate must carry: its node's name, or the operator's), the
    /// certificate must also chain to one of the trusted CAs, be valid now and name `own`.
    pub fn load(files: &TlsFiles, own: Option<&str>) -> Result<Self, TlsError> {
        let cas = pem(
            "CA file",
            &files.ca,
            parse_certs(&read("CA file", &files.ca)?),
        )?;
        let chain = pem(
            "certificate",
            &files.cert,
            parse_certs(&read("certificate", &files.cert)?),
        )?;
        let key = pem(
            "private key",
            &files.key,
            parse_key(&read("private key", &files.key)?),
        )?;
        let config_err = |reason: String| TlsError::Config {
            files: Box::new(files.clone()),
            reason,
        };
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots
                .add(ca.clone())
                .map_err(|e| config_err(format!("a CA certificate is unusable: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let versions = &[&rustls::version::TLS13];
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| config_err(e.to_string()))?;
        if let Some(own) = own {
            check_own(verifier.as_ref(), &chain, own).map_err(|reason| {
                config_err(format!(
                    "the certificate {} cannot be used: {reason}",
                    files.cert.display()
                ))
            })?;
        }
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| config_err(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| config_err(e.to_string()))?;
        let optional =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(|e| config_err(e.to_string()))?;
        let http_server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| config_err(e.to_string()))?
            .with_client_cert_verifier(optional)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| config_err(e.to_string()))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| config_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key)
            .map_err(|e| config_err(e.to_string()))?;
        let mut not_after = Vec::new();
        let label = |kind: &str, path: &Path| format!("{kind} {}", path.display());
        for (cert, name) in chain
            .iter()
            .take(1)
            .map(|c| (c, label("certificate", &files.cert)))
            .chain(
                cas.iter()
                    .map(|c| (c, label("CA certificate in", &files.ca))),
            )
        {
            let t = not_after_unix(cert).ok_or_else(|| {
                config_err(format!("{name}: cannot read its validity (not X.509 DER?)"))
            })?;
            not_after.push((name, t));
        }
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            http_server: Arc::new(http_server),
            not_after,
        })
    }
}

/// This identity's certificate chains to a trusted CA, is valid now and names `own`.
fn check_own(
    verifier: &dyn rustls::server::danger::ClientCertVerifier,
    chain: &[CertificateDer<'static>],
    own: &str,
) -> Result<(), String> {
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
    let now = rustls_pki_types::UnixTime::now();
    verifier
        .verify_client_cert(leaf, intermediates, now)
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                "it is not issued by a CA of the CA file".to_owned()
            }
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
            ) => "it has expired".to_owned(),
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. },
            ) => "it is not valid yet".to_owned(),
            e => e.to_string(),
        })?;
    let parsed = rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| e.to_string())?;
    let named = rustls_pki_types::ServerName::try_from(own)
        .is_ok_and(|n| rustls::client::verify_server_name(&parsed, &n).is_ok());
    if named {
        Ok(())
    } else {
        Err(format!("it does not name `{own}`"))
    }
}

/// A certificate in use that expires soon (or has expired).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiring {
    /// Which certificate (kind and file).
    pub what: String,
    /// Seconds until it expires (negative: expired).
    pub remaining_s: i64,
}

/// The reloadable TLS state of one process.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
    /// Node names by id: the name a node's certificate must carry.
    names: BTreeMap<NodeId, String>,
    /// The name this identity's own certificate must carry, checked at every (re)load.
    own: Option<String>,
}

impl Tls {
    /// Loads the material without checking whom the certificate names or whether it is
    /// valid now (tests and tools that must present a bad certificate); daemons use
    /// [`Tls::load_as`].
    pub fn load(files: TlsFiles, names: BTreeMap<NodeId, String>) -> Result<Self, TlsError> {
        Self::load_checked(files, names, None)
    }

    /// Loads the material of the identity named `own` (its node's name, or the operator's):
    /// the certificate must chain to a trusted CA, be valid now and name `own`, at start and
    /// at every reload (the process refuses to start when it does not load).
    pub fn load_as(
        files: TlsFiles,
        names: BTreeMap<NodeId, String>,
        own: &str,
    ) -> Result<Self, TlsError> {
        Self::load_checked(files, names, Some(own.to_owned()))
    }

    fn load_checked(
        files: TlsFiles,
        names: BTreeMap<NodeId, String>,
        own: Option<String>,
    ) -> Result<Self, TlsError> {
        let m = Material::load(&files, own.as_deref())?;
        Ok(Self {
            files,
            current: RwLock::new(Arc::new(m)),
            names,
            own,
        })
    }

    /// Re-reads the files; on error (unreadable, or a certificate that is not usable for this
    /// identity) the previous material stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let m = Material::load(&self.files, self.own.as_deref())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
        Ok(())
    }

    /// The material new connections use.
    pub fn current(&self) -> Arc<Material> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The server configuration of the HTTP endpoint (for a `tokio_rustls::TlsAcceptor` on
    /// its listener): this node's certificate; client certificates optional. Take it per
    /// accepted connection so that a SIGHUP reload applies.
    pub fn http_server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current().http_server)
    }

    /// The name node `id`'s certificate must carry.
    pub fn node_name(&self, id: NodeId) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// The files this state was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Certificates in use that expire within `threshold_s` of `now_unix`.
    pub fn expiring(&self, now_unix: i64, threshold_s: i64) -> Vec<Expiring> {
        self.current()
            .not_after
            .iter()
            .map(|(what, t)| Expiring {
                what: what.clone(),
                remaining_s: t - now_unix,
            })
            .filter(|e| e.remaining_s <= threshold_s)
            .collect()
    }

    /// Seconds until the first certificate in use expires.
    pub fn min_remaining_s(&self, now_unix: i64) -> Option<i64> {
        self.current()
            .not_after
            .iter()
            .map(|(_, t)| t - now_unix)
            .min()
    }
}

/// One DER element: (tag, content, rest). `None` on anything malformed.
fn der_next(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (lb, rest) = b.split_at(n);
        b = rest;
        lb.iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
    };
    if b.len() < len {
        return None;
    }
    let (content, rest) = b.split_at(len);
    Some((tag, content, rest))
}

/// The `notAfter` of an X.509 certificate, in Unix seconds; `None` when the DER is malformed.
pub fn not_after_unix(der: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = der_next(der)? else {
        return None;
    };
    let (0x30, tbs, _) = der_next(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, r) = der_next(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    for _ in 0..3 {
        let (_, _, r) = der_next(rest)?; // serial, signature algorithm, issuer
        rest = r;
    }
    let (0x30, validity, _) = der_next(rest)? else {
        return None;
    };
    let (_, _, r) = der_next(validity)?; // notBefore
    let (tag, t, _) = der_next(r)?;
    parse_time(tag, t)
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn parse_time(tag: u8, t: &[u8]) -> Option<i64> {
    let (year, rest) = match (tag, t.len()) {
        (0x17, 13) => {
            let yy = digits(&t[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &t[2..])
        }
        (0x18, 15) => (digits(&t[..4])?, &t[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let f = |i: usize| digits(&rest[i..i + 2]);
    let (mo, d, h, mi, s) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
pub fn days_to_civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::super::certgen::{Ca, Validity};
    use super::*;

    #[test]
    fn civil_dates_round_trip_and_match_known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_to_civil(11_017), (2000, 3, 1));
        for d in [-1000, 0, 59, 60, 10_957, 20_000, 2_932_896] {
            let (y, m, dd) = days_to_civil(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn not_after_is_read_from_a_generated_certificate() {
        let today = 20_500;
        let ca = Ca::new("t", Validity::for_days(today, 40)).unwrap();
        let der = parse_certs(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(not_after_unix(&der[0]), Some((today + 40) * 86_400));
        // GeneralizedTime (year ≥ 2050) too.
        let far = Ca::new("t", Validity::for_days(today, 30_000)).unwrap();
        let der = parse_certs(far.cert_pem().as_bytes()).unwrap();
        assert_eq!(not_after_unix(&der[0]), Some((today + 30_000) * 86_400));
    }

    #[test]
    fn malformed_der_and_times_give_none_never_a_panic() {
        let ca = Ca::new("t", Validity::for_days(20_500, 40)).unwrap();
        let der = parse_certs(ca.cert_pem().as_bytes()).unwrap()[0].to_vec();
        for cut in 0..der.len() {
            let _ = not_after_unix(&der[..cut]);
        }
        assert_eq!(not_after_unix(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse_time(0x17, b"991301000000Z"), None);
        assert_eq!(parse_time(0x17, b"99010100000aZ"), None);
        assert_eq!(parse_time(0x18, b"2099010100000Z"), None);
    }

    #[test]
    fn pem_errors_say_what_is_missing() {
        assert_eq!(parse_certs(b"").unwrap_err(), "no CERTIFICATE block");
        assert_eq!(
            parse_key(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err(),
            "no PRIVATE KEY block"
        );
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(parse_certs(bad).unwrap_err().starts_with("malformed PEM"));
    }
}
