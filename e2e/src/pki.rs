//! Test certificates: a CA and a server certificate for the gRPC channel, made with rcgen.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM files written to a directory.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestPki {
    /// A fresh CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn create(dir: &Path, names: &[&str]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let server_key = KeyPair::generate()?;
        let server =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?
                .signed_by(&server_key, &ca)?;
        let pki = Self {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
        };
        std::fs::write(&pki.ca_file, ca.pem())?;
        std::fs::write(&pki.cert_file, server.pem())?;
        std::fs::write(&pki.key_file, server_key.serialize_pem())?;
        Ok(pki)
    }
}
