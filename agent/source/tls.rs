//! TLS to a database server, as `sslmode` asks: the rustls client settings for "prefer" and
//! "require" (encrypted, the certificate not checked, as libpq does) and "verify-full" (the
//! certificate checked against `sslrootcert`'s CAs, or the system's, and the host's name).

use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the connection to a database server is protected, as libpq's `sslmode` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, unverified; else plain (libpq's default).
    Prefer,
    /// TLS always, unverified: private from onlookers, not from a server in the middle.
    Require,
    /// TLS always, the server's certificate checked against the CAs and its name against the host.
    VerifyFull,
}

impl SslMode {
    pub(crate) const CHOICES: &str = "\"disable\", \"prefer\", \"require\" or \"verify-full\"";

    /// As the config writes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<SslMode> {
        [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyFull]
            .into_iter()
            .find(|mode| mode.name() == text)
    }
}

/// The CAs in PEM `text`; an error when it holds none.
pub(crate) fn root_store(pem: &[u8]) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for certificate in rustls_pki_types::pem::PemObject::pem_slice_iter(pem) {
        let certificate: CertificateDer<'static> = certificate.context("reading a PEM certificate")?;
        store.add(certificate).context("adding a CA certificate")?;
    }
    if store.is_empty() {
        bail!("no PEM certificate in it");
    }
    Ok(store)
}

/// The client settings for `sslmode`, trusting `root_certificates` (PEM) for "verify-full", or
/// the system's CAs when there are none.
pub(crate) fn client_config(sslmode: SslMode, root_certificates: Option<&[u8]>) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?;
    let config = match sslmode {
        SslMode::VerifyFull => {
            let roots = match root_certificates {
                Some(pem) => root_store(pem)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(Unverified(provider))).with_no_client_auth()
        }
    };
    Ok(config)
}

/// The system's CAs (Debian's ca-certificates), for "verify-full" without `sslrootcert`.
fn system_roots() -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(system_root_certificates()?.into_iter().map(CertificateDer::from));
    Ok(store)
}

/// The system's CA certificates, DER-encoded; an error when there are none.
pub(crate) fn system_root_certificates() -> anyhow::Result<Vec<Vec<u8>>> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        bail!(
            "sslmode \"verify-full\" without sslrootcert trusts the system's CAs, and none were found: set sslrootcert"
        );
    }
    Ok(found.certs.into_iter().map(|certificate| certificate.to_vec()).collect())
}

/// Accepts any certificate, still checking that the server holds its key: libpq's "prefer" and
/// "require", which encrypt without knowing who answers.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
