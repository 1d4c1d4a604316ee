//! Generating a cluster CA and its certificates (rcgen, on the ring provider rustls uses too):
//! what `cm_local` writes for a test cluster and what the transport's tests use. A production
//! cluster brings its own CA (cm-daemons/README.md shows the openssl commands).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::tls::days_to_civil;

/// A certificate could not be generated (rcgen's reason).
#[derive(Debug, thiserror::Error)]
#[error("cannot generate a certificate for `{name}`: {source}")]
pub struct CertGenError {
    name: String,
    #[source]
    source: rcgen::Error,
}

/// A validity window in whole days relative to `today` (days since the Unix epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Today, in days since 1970-01-01 (the caller reads the clock).
    pub today: i64,
    /// First valid day, relative to today (usually −1, to absorb clock skew).
    pub from_days: i64,
    /// Last valid day, relative to today (negative: an already expired certificate).
    pub until_days: i64,
}

impl Validity {
    /// From yesterday to `days` from now.
    pub fn for_days(today: i64, days: i64) -> Self {
        Self {
            today,
            from_days: -1,
            until_days: days,
        }
    }

    fn apply(&self, p: &mut CertificateParams) {
        let day = |d: i64| {
            let (y, m, dd) = days_to_civil(self.today + d);
            rcgen::date_time_ymd(y as i32, m as u8, dd as u8)
        };
        p.not_before = day(self.from_days);
        p.not_after = day(self.until_days);
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The PKCS#8 private key (PEM); write it with mode 0600.
    pub key_pem: String,
}

/// A certificate authority that can issue node and operator certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(..)")
    }
}

fn gen_err(name: &str) -> impl FnOnce(rcgen::Error) -> CertGenError + '_ {
    move |source| CertGenError {
        name: name.to_owned(),
        source,
    }
}

impl Ca {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str, validity: Validity) -> Result<Self, CertGenError> {
        let err = gen_err(common_name);
        let key = KeyPair::generate().map_err(gen_err(common_name))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        validity.apply(&mut params);
        let cert = params.self_signed(&key).map_err(gen_err(common_name))?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The CA's certificate (PEM): what `ssl_ca_file` holds.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM), to issue more certificates later.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate whose DNS name is `name` (a node's name, or
    /// [`cm_core::security::OPERATOR_NAME`]), usable as client and server certificate.
    pub fn issue(&self, name: &str, validity: Validity) -> Result<Issued, CertGenError> {
        let key = KeyPair::generate().map_err(gen_err(name))?;
        let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(gen_err(name))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity.apply(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(gen_err(name))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes a test cluster's material into `dir`: `ca.crt` (and `ca.key`), `NAME.crt` and
/// `NAME.key` per node name, `operator.crt` and `operator.key`; keys with mode 0600. The
/// config keys that match are `ssl_ca_file = "DIR/ca.crt"`, `ssl_cert_file = "DIR/{node}.crt"`,
/// `ssl_key_file = "DIR/{node}.key"`, `ssl_operator_cert_file = "DIR/operator.crt"`,
/// `ssl_operator_key_file = "DIR/operator.key"`. A node name that would collide with those
/// files (`ca`, `operator`) or is not a plain file name is refused before anything is written.
pub fn write_cluster_material(
    dir: &std::path::Path,
    cluster: &str,
    node_names: &[&str],
    today: i64,
) -> Result<(), WriteError> {
    for name in node_names {
        let plain = !name.is_empty() && *name != "." && *name != ".." && !name.contains('/');
        if !plain || ["ca", "operator"].contains(name) {
            return Err(WriteError::BadName((*name).to_owned()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| WriteError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = Ca::new(
        &format!("{cluster} cluster CA"),
        Validity::for_days(today, 3650),
    )?;
    write(dir, "ca.crt", ca.cert_pem(), false)?;
    write(dir, "ca.key", ca.key_pem(), true)?;
    let leaf = Validity::for_days(today, 825);
    for name in node_names {
        let issued = ca.issue(name, leaf)?;
        write(dir, &format!("{name}.crt"), &issued.cert_pem, false)?;
        write(dir, &format!("{name}.key"), &issued.key_pem, true)?;
    }
    let op = ca.issue(cm_core::security::OPERATOR_NAME, leaf)?;
    write(dir, "operator.crt", &op.cert_pem, false)?;
    write(dir, "operator.key", &op.key_pem, true)?;
    Ok(())
}

/// Material that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Generation failed.
    #[error(transparent)]
    Gen(#[from] CertGenError),
    /// A node name that cannot name its files.
    #[error(
        "node name `{0}` cannot be used for its certificate files (`ca` and `operator` are the CA's and the operator's; a name must be a plain file name)"
    )]
    BadName(String),
    /// A file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn write(dir: &std::path::Path, name: &str, text: &str, secret: bool) -> Result<(), WriteError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let io = |source| WriteError::Io {
        path: path.clone(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    let mut f = opts.open(&path).map_err(io)?;
    if secret {
        // `mode` applies only when the file is created: an existing key file gets 0600 too.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)
}

/// Today in days since 1970-01-01, from the system clock.
pub fn today() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn node_names_that_collide_with_the_ca_or_operator_files_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["ca", "operator", "../x", "", ".."] {
            let err = write_cluster_material(dir.path(), "t", &["n1", bad], today()).unwrap_err();
            assert!(matches!(&err, WriteError::BadName(n) if n == bad), "{err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn rewritten_key_files_are_0600_even_if_they_were_readable() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("n1.key");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_cluster_material(dir.path(), "t", &["n1"], today()).unwrap();
        for f in ["n1.key", "ca.key", "operator.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
}
