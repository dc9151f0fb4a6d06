//! The cluster's certificates and the mutual-TLS configurations QUIC uses.
//!
//! One CA per cluster signs every agent's certificate. A certificate names
//! its node: the node id is the subject common name (and a DNS name, so
//! ordinary tools show it). Both ends of every connection present a
//! certificate and check the other's against the CA; the node id read from
//! the peer's certificate is then checked against the node id it claims in
//! SWIM, so a member cannot speak for another.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use shoal_membership::NodeId;

/// ALPN protocol id of Shoal's QUIC connections.
pub const ALPN: &[u8] = b"shoal/1";
/// Certificates are valid this many days (CA: ten times as long).
pub const CERT_VALIDITY_DAYS: i64 = 825;

/// The one crypto provider compiled in: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Writes a new CA (`ca.pem`, `ca-key.pem`) into `out`; refuses to
/// overwrite an existing CA.
pub fn create_ca(out: &Path, cluster_hint: &str) -> Result<PathBuf> {
    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let cert_path = out.join("ca.pem");
    let key_path = out.join("ca-key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite a CA",
                path.display()
            );
        }
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("shoal cluster CA {cluster_hint}"),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = validity_end(CERT_VALIDITY_DAYS * 10);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_private(&key_path, &key.serialize_pem())?;
    fs::write(&cert_path, cert.pem()).with_context(|| format!("write {}", cert_path.display()))?;
    Ok(cert_path)
}

/// Writes `ID.pem` and `ID-key.pem` for `node_id` into `out`, signed by the
/// CA in `ca_dir`. `ips` and `dns` become extra subject alternative names.
pub fn create_cert(
    ca_dir: &Path,
    node_id: &NodeId,
    ips: &[IpAddr],
    dns: &[String],
    out: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let ca_cert_path = ca_dir.join("ca.pem");
    let ca_key_path = ca_dir.join("ca-key.pem");
    let ca_cert = fs::read_to_string(&ca_cert_path)
        .with_context(|| format!("read {}", ca_cert_path.display()))?;
    let ca_key = fs::read_to_string(&ca_key_path)
        .with_context(|| format!("read {}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key).context("parse the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key).context("parse the CA certificate")?;

    let mut params = CertificateParams::new(vec![node_id.to_string()])?;
    for dns_name in dns {
        let name = dns_name
            .clone()
            .try_into()
            .with_context(|| format!("bad DNS name {dns_name:?}"))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, node_id.as_str());
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = validity_end(CERT_VALIDITY_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let cert_path = out.join(format!("{node_id}.pem"));
    let key_path = out.join(format!("{node_id}-key.pem"));
    fs::write(&cert_path, cert.pem()).with_context(|| format!("write {}", cert_path.display()))?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
}

fn validity_end(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// The CA, certificate and key of one agent, loaded and checked.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// The node id the certificate names.
    pub node_id: NodeId,
}

impl TlsIdentity {
    /// Loads the PEM files named in the config's `[tls]` section.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let roots_pem = read_pem_certs(ca).context("tls.ca")?;
        let mut roots = RootCertStore::empty();
        for root in roots_pem {
            roots
                .add(root)
                .map_err(|error| anyhow!("tls.ca: {}: {error}", ca.display()))?;
        }
        let chain = read_pem_certs(cert).context("tls.cert")?;
        let key_bytes =
            fs::read(key).with_context(|| format!("tls.key: read {}", key.display()))?;
        let key_der = rustls_pemfile::private_key(&mut key_bytes.as_slice())
            .with_context(|| format!("tls.key: parse {}", key.display()))?
            .ok_or_else(|| anyhow!("tls.key: no private key in {}", key.display()))?;
        let node_id = node_id_of(&chain[0]).context("tls.cert")?;
        let identity = Self {
            roots: Arc::new(roots),
            chain,
            key: Arc::new(key_der),
            node_id,
        };
        // Fail at start, not at the first connection, if the pair is wrong.
        identity
            .server_config()
            .context("tls: certificate and key do not match")?;
        Ok(identity)
    }

    /// The server side: our certificate, and client certificates required
    /// and checked against the CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .context("client verifier")?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// The client side: our certificate, and the server's checked against
    /// the CA. The server's *name* is not checked here: peers are dialled
    /// by address, and the node id in the certificate is compared with the
    /// node id expected once the handshake is done.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let verifier = CaOnlyVerifier {
            inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
                self.roots.clone(),
                provider(),
            )
            .build()
            .context("server verifier")?,
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

/// The node id a certificate names (its subject common name).
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|error| anyhow!("parse certificate: {error}"))?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| anyhow!("certificate has no common name"))?
        .as_str()
        .map_err(|error| anyhow!("certificate common name: {error}"))?;
    Ok(NodeId::new(common_name)?)
}

/// Verifies the server's chain against the cluster CA, whatever name it was
/// dialled by; see [`TlsIdentity::client_config`].
#[derive(Debug)]
struct CaOnlyVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Check the chain with the certificate's own node id as the name, so
        // the CA signature, validity and usage are all verified.
        let node_id = node_id_of(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let name = ServerName::try_from(node_id.to_string()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
