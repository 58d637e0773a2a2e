//! TLS client configuration for [`HttpFetcher`](super::HttpFetcher): the trusted roots (OS
//! store plus any added roots), normal WebPKI validation, and optional SHA-256 pinning of the
//! server certificate's SubjectPublicKeyInfo.
//!
//! Pinning runs *after* WebPKI validation, never instead of it: a pin narrows which valid
//! certificates are accepted, it does not make an otherwise untrusted certificate acceptable.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::digest;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use super::FetchError;

/// Builds the rustls configuration handed to reqwest.
pub(super) fn client_config(
    extra_roots: &[Vec<u8>],
    pins: &[[u8; 32]],
) -> Result<rustls::ClientConfig, FetchError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

    let mut roots = RootCertStore::empty();
    // Unparsable OS certificates are skipped rather than failing the whole build.
    let (_added, _ignored) = roots.add_parsable_certificates(native_roots().iter().cloned());
    for der in extra_roots {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| FetchError::Config(format!("invalid root certificate: {e}")))?;
    }

    // An empty store (a container without CA certificates, no roots added) must not stop the
    // fetcher from being built; every handshake will then fail as untrusted.
    let webpki = if roots.is_empty() {
        None
    } else {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| FetchError::Config(format!("tls verifier: {e}")))?;
        Some(verifier)
    };
    let verifier = PinningVerifier {
        webpki,
        pins: pins.to_vec(),
        algorithms: provider.signature_verification_algorithms,
    };

    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Config(format!("tls: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // The client speaks HTTP/1.1 only; advertise exactly that.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Whether `err` or anything in its source chain is a pin mismatch raised by our verifier.
///
/// The verifier's error reaches us wrapped in rustls, `io::Error` (whose `source()` skips the
/// error it wraps, hence `get_ref`), hyper and reqwest errors, so each layer is unwrapped here.
pub(super) fn is_pin_mismatch(err: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.is::<PinMismatch>() {
            return true;
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            err.downcast_ref::<rustls::Error>()
        {
            if other.0.is::<PinMismatch>() {
                return true;
            }
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if is_pin_mismatch(inner) {
                return true;
            }
        }
        current = err.source();
    }
    false
}

/// The OS trust store, loaded once per process: reading it is slow and it rarely changes.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let result = rustls_native_certs::load_native_certs();
        for error in &result.errors {
            tracing::debug!(%error, "skipping part of the os certificate store");
        }
        if result.certs.is_empty() {
            tracing::warn!("the os certificate store is empty; only added roots are trusted");
        }
        result.certs
    })
}

/// The marker carried inside the rustls error when no pin matches.
#[derive(Debug)]
struct PinMismatch;

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server public key matches no pin")
    }
}

impl StdError for PinMismatch {}

/// WebPKI validation, then (when pins are configured) an SPKI pin check on the end entity.
struct PinningVerifier {
    /// `None` when there are no trusted roots at all.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinningVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinningVerifier")
            .field("has_roots", &self.webpki.is_some())
            .field("pins", &self.pins.len())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        let verified = webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.pins.is_empty() {
            return Ok(verified);
        }
        let spki = spki_der(end_entity.as_ref()).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        let hash = digest::digest(&digest::SHA256, spki);
        if self.pins.iter().any(|pin| pin[..] == *hash.as_ref()) {
            Ok(verified)
        } else {
            tracing::debug!(?server_name, "spki pin mismatch");
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

const TAG_INTEGER: u8 = 0x02;
const TAG_SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT`, the optional version field of a TBSCertificate.
const TAG_VERSION: u8 = 0xA0;

/// The DER of the SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 §4.1), found by
/// walking `Certificate → TBSCertificate → version?, serial, signature, issuer, validity,
/// subject → subjectPublicKeyInfo`. The certificate has already passed WebPKI parsing, so
/// this only needs to be correct, not a general DER parser.
fn spki_der(cert: &[u8]) -> Option<&[u8]> {
    let certificate = Tlv::read(cert)?.expect(TAG_SEQUENCE)?;
    let tbs = Tlv::read(certificate.content)?.expect(TAG_SEQUENCE)?;
    let mut rest = tbs.content;
    if rest.first() == Some(&TAG_VERSION) {
        rest = Tlv::read(rest)?.rest;
    }
    rest = Tlv::read(rest)?.expect(TAG_INTEGER)?.rest; // serialNumber
    for _ in 0..4 {
        // signature, issuer, validity, subject
        rest = Tlv::read(rest)?.expect(TAG_SEQUENCE)?.rest;
    }
    Some(Tlv::read(rest)?.expect(TAG_SEQUENCE)?.whole)
}

/// One DER tag-length-value.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    /// Tag, length and content together.
    whole: &'a [u8],
    /// What follows.
    rest: &'a [u8],
}

impl<'a> Tlv<'a> {
    fn read(input: &'a [u8]) -> Option<Tlv<'a>> {
        let (&tag, after_tag) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // High tag numbers never appear in the fields we walk.
        }
        let (&first, mut after_len) = after_tag.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            // Zero is BER's indefinite length; more than four bytes is no real certificate.
            if count == 0 || count > 4 {
                return None;
            }
            let (bytes, rest) = after_len.split_at_checked(count)?;
            after_len = rest;
            bytes
                .iter()
                .fold(0usize, |len, byte| (len << 8) | usize::from(*byte))
        };
        let (content, rest) = after_len.split_at_checked(len)?;
        let header_len = input.len() - after_len.len();
        Some(Tlv {
            tag,
            content,
            whole: &input[..header_len + len],
            rest,
        })
    }

    fn expect(self, tag: u8) -> Option<Tlv<'a>> {
        (self.tag == tag).then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn spki_matches_the_key_the_certificate_was_made_for() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(
                spki_der(cert.der()),
                Some(&key.subject_public_key_info()[..])
            );
        }
    }

    #[test]
    fn spki_of_malformed_input_is_none() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        for len in 0..der.len() {
            assert_eq!(spki_der(&der[..len]), None, "truncated to {len}");
        }
        assert_eq!(spki_der(&[]), None);
        assert_eq!(spki_der(&[0x30, 0x80, 0x00, 0x00]), None);
        assert_eq!(spki_der(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(spki_der(&[0x1f, 0x00]), None);
    }

    #[test]
    fn pin_mismatch_is_found_through_io_errors() {
        let rustls_err = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(PinMismatch),
        )));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let outer: Box<dyn StdError + Send + Sync> = Box::new(io);
        assert!(is_pin_mismatch(outer.as_ref()));

        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert!(!is_pin_mismatch(&other));
    }
}
