//! How SNS signs what it delivers to HTTP/S endpoints and SQS queues: notifications and
//! (un)subscription confirmations carry a `Signature` over a canonical string of their fields,
//! made with the key whose certificate is served at `SigningCertURL`.
//!
//! Stratus has one identity (an RSA-2048 key and a self-signed certificate) per installation;
//! the caller stores it with [`Signer::to_der`] so subscribers that cached the certificate keep
//! verifying after a restart.

use std::{str::FromStr, time::Duration};

use base64::{Engine, prelude::BASE64_STANDARD};
use getrandom::SysRng;
use rsa::{
    PrivateKey,
    pkcs1v15::SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, SecretDocument},
    signature::{SignatureEncoding, Signer as _},
};
use sha1::Sha1;
use sha2::Sha256;
use x509_cert::{
    Certificate, SubjectPublicKeyInfo, TbsCertificate,
    builder::{self, Builder, CertificateBuilder, profile::BuilderProfile},
    der::{Decode, Encode, EncodePem, asn1::Ia5String, pem::LineEnding},
    ext::{
        Extension, ToExtension,
        pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectAltName, SubjectKeyIdentifier, name::GeneralName},
    },
    name::Name,
    serial_number::SerialNumber,
    spki::SubjectPublicKeyInfoRef,
    time::Validity,
};

/// The name in SNS's own signing certificates, which some verifiers check.
const SNS_HOST: &str = "sns.amazonaws.com";
/// The size of SNS's own signing keys.
const KEY_BITS: usize = 2048;
/// Long enough that a stored identity never expires under a subscriber that checks validity.
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The names SNS signs for a `Notification`, in byte order.
const NOTIFICATION_FIELDS: [&str; 6] = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"];
/// The names SNS signs for a `SubscriptionConfirmation` or `UnsubscribeConfirmation`, in byte order.
const CONFIRMATION_FIELDS: [&str; 7] =
    ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"];

/// Why an identity could not be made or restored.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the system random source failed: {0}")]
    Random(#[from] getrandom::Error),
    #[error("RSA key: {0}")]
    Key(#[from] rsa::Error),
    #[error("PKCS#8 private key: {0}")]
    Pkcs8(#[from] rsa::pkcs8::Error),
    #[error("public key: {0}")]
    PublicKey(#[from] x509_cert::spki::Error),
    #[error("certificate encoding: {0}")]
    Der(#[from] x509_cert::der::Error),
    #[error("certificate: {0}")]
    Certificate(#[from] builder::Error),
    #[error("the certificate is not for this private key")]
    KeyMismatch,
}

/// Stratus's SNS signing identity: an RSA-2048 key and a self-signed X.509 certificate for it.
pub struct Signer {
    sha1: SigningKey<Sha1>,
    sha256: SigningKey<Sha256>,
    // The encodings are made once, so that the accessors cannot fail.
    key_pkcs8: SecretDocument,
    certificate_der: Vec<u8>,
    certificate_pem: String,
}

impl Signer {
    /// A fresh key and a certificate for it, CN and DNS name `sns.amazonaws.com`, valid for ten
    /// years. RSA key generation takes about 0.1 s in a release build, up to about a second in a debug one.
    pub fn generate() -> Result<Signer, SigningError> {
        let key = PrivateKey::new(&mut SysRng, KEY_BITS)?;
        let mut serial = [0; 16];
        getrandom::fill(&mut serial)?;
        let certificate = CertificateBuilder::new(
            SnsProfile { subject: Name::from_str(&format!("CN={SNS_HOST}"))? },
            SerialNumber::new(&serial)?,
            Validity::from_now(VALIDITY)?,
            SubjectPublicKeyInfo::from_key(key.as_public_key())?,
        )?
        .build(&SigningKey::<Sha256>::new(key.clone()))?;
        Self::assemble(key, &certificate)
    }

    /// The key as PKCS#8 DER and the certificate as DER, to restore with [`Signer::from_der`].
    pub fn to_der(&self) -> (Vec<u8>, Vec<u8>) {
        (self.key_pkcs8.as_bytes().to_vec(), self.certificate_der.clone())
    }

    /// The identity [`Signer::to_der`] saved. Fails if the certificate is for another key: the
    /// two may be stored apart, and a mismatch would otherwise only show as every subscriber
    /// rejecting every message.
    pub fn from_der(key_pkcs8: &[u8], certificate: &[u8]) -> Result<Signer, SigningError> {
        let key = PrivateKey::from_pkcs8_der(key_pkcs8)?;
        let certificate = Certificate::from_der(certificate)?;
        if *certificate.tbs_certificate().subject_public_key_info()
            != SubjectPublicKeyInfo::from_key(key.as_public_key())?
        {
            return Err(SigningError::KeyMismatch);
        }
        Self::assemble(key, &certificate)
    }

    fn assemble(key: PrivateKey, certificate: &Certificate) -> Result<Signer, SigningError> {
        Ok(Signer {
            key_pkcs8: key.to_pkcs8_der()?,
            certificate_der: certificate.to_der()?,
            certificate_pem: certificate.to_pem(LineEnding::LF)?,
            sha1: SigningKey::new(key.clone()),
            sha256: SigningKey::new(key),
        })
    }

    /// The certificate in PEM, served at `SigningCertURL`.
    pub fn certificate_pem(&self) -> String {
        self.certificate_pem.clone()
    }

    /// The base64 `Signature` of `canonical` (see [`canonical_string`]): SHA256withRSA for
    /// `SignatureVersion` "2", otherwise SHA1withRSA, as for SNS's default version "1" (the topic
    /// attribute only ever holds "1" or "2"). Both are RSASSA-PKCS1-v1_5.
    ///
    /// Panics only if the system random source fails, as it blinds the RSA operation.
    pub fn sign(&self, signature_version: &str, canonical: &str) -> String {
        let signature = match signature_version {
            "2" => self.sha256.sign(canonical.as_bytes()),
            _ => self.sha1.sign(canonical.as_bytes()),
        };
        BASE64_STANDARD.encode(signature.to_bytes())
    }
}

/// The string SNS signs for a message, given the message's fields (names and values, in any
/// order; fields SNS does not sign, such as `SigningCertURL`, are ignored). The `Type` field
/// chooses the signed names: for `Notification`, `Message`, `MessageId`, `Subject`, `Timestamp`,
/// `TopicArn` and `Type`; for the two confirmations, `Message`, `MessageId`, `SubscribeURL`,
/// `Timestamp`, `Token`, `TopicArn` and `Type`. Each present one becomes "Name\nvalue\n", in
/// that (byte) order; an absent one is left out, which is how a notification without a subject
/// is signed.
pub fn canonical_string(fields: &[(&str, &str)]) -> String {
    let value = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|&(_, v)| v);
    let signed: &[&str] = match value("Type") {
        Some("Notification") => &NOTIFICATION_FIELDS,
        _ => &CONFIRMATION_FIELDS,
    };
    let mut canonical = String::new();
    for name in signed {
        if let Some(value) = value(name) {
            canonical.extend([name, "\n", value, "\n"]);
        }
    }
    canonical
}

/// The certificate's shape: self-signed, and like SNS's own an end-entity certificate for
/// `sns.amazonaws.com` whose key only signs.
struct SnsProfile {
    subject: Name,
}

impl BuilderProfile for SnsProfile {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let mut extensions = Vec::new();
        let basic_constraints = BasicConstraints { ca: false, path_len_constraint: None };
        extensions.push(basic_constraints.to_extension(subject, &extensions)?);
        let key_usage = KeyUsage(KeyUsages::DigitalSignature.into());
        extensions.push(key_usage.to_extension(subject, &extensions)?);
        let alt_name = SubjectAltName(vec![GeneralName::DnsName(Ia5String::new(SNS_HOST)?)]);
        extensions.push(alt_name.to_extension(subject, &extensions)?);
        let key_id = SubjectKeyIdentifier::try_from(spk)?;
        extensions.push(key_id.to_extension(subject, &extensions)?);
        Ok(extensions)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use rsa::{
        PublicKey,
        pkcs1v15::{Signature, VerifyingKey},
        signature::Verifier,
    };
    use x509_cert::der::{DecodePem, referenced::OwnedToRef};

    use super::*;

    // Key generation is slow in a debug build, so the tests share two identities.
    static SIGNER: LazyLock<Signer> = LazyLock::new(|| Signer::generate().expect("generate a signer"));
    static OTHER: LazyLock<Signer> = LazyLock::new(|| Signer::generate().expect("generate a signer"));

    const CANONICAL: &str = "Message\nhello\nMessageId\n1\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n";

    fn public_key(pem: &str) -> PublicKey {
        let certificate = Certificate::from_pem(pem).expect("the PEM parses");
        let spki = certificate.tbs_certificate().subject_public_key_info();
        PublicKey::try_from(spki.owned_to_ref()).expect("an RSA public key")
    }

    fn signature(base64: &str) -> Signature {
        let bytes = BASE64_STANDARD.decode(base64).expect("base64");
        Signature::try_from(bytes.as_slice()).expect("a signature")
    }

    #[test]
    fn notification_canonical_string_matches_the_documented_example() {
        let fields = [
            ("Type", "Notification"),
            ("MessageId", "4d4dc071-ddbf-465d-bba8-08f81c89da64"),
            ("TopicArn", "arn:aws:sns:us-east-2:123456789012:MyTopic"),
            ("Subject", "My subject"),
            ("Message", "My Test Message"),
            ("Timestamp", "2019-01-31T04:37:04.321Z"),
            ("SignatureVersion", "1"),
            ("SigningCertURL", "https://sns.us-east-2.amazonaws.com/cert.pem"),
            ("UnsubscribeURL", "https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe"),
        ];
        assert_eq!(
            canonical_string(&fields),
            "Message\nMy Test Message\n\
             MessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\n\
             Subject\nMy subject\n\
             Timestamp\n2019-01-31T04:37:04.321Z\n\
             TopicArn\narn:aws:sns:us-east-2:123456789012:MyTopic\n\
             Type\nNotification\n"
        );
    }

    #[test]
    fn notification_without_subject_leaves_it_out() {
        let fields = [
            ("Message", "hello"),
            ("MessageId", "1"),
            ("Timestamp", "t"),
            ("TopicArn", "arn"),
            ("Type", "Notification"),
        ];
        assert_eq!(canonical_string(&fields), CANONICAL);
    }

    #[test]
    fn confirmation_canonical_string_signs_subscribe_url_and_token() {
        let fields = [
            ("Type", "SubscriptionConfirmation"),
            ("MessageId", "3d891288-136d-417f-bc05-901c108273ee"),
            ("Token", "233"),
            ("TopicArn", "arn:aws:sns:us-east-2:123456789012:MyTopic"),
            ("Message", "You have chosen to subscribe.\nTo confirm, visit the SubscribeURL."),
            ("SubscribeURL", "https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription"),
            ("Timestamp", "2019-01-31T19:25:13.719Z"),
            ("Subject", "not signed for confirmations"),
        ];
        assert_eq!(
            canonical_string(&fields),
            "Message\nYou have chosen to subscribe.\nTo confirm, visit the SubscribeURL.\n\
             MessageId\n3d891288-136d-417f-bc05-901c108273ee\n\
             SubscribeURL\nhttps://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription\n\
             Timestamp\n2019-01-31T19:25:13.719Z\n\
             Token\n233\n\
             TopicArn\narn:aws:sns:us-east-2:123456789012:MyTopic\n\
             Type\nSubscriptionConfirmation\n"
        );
    }

    #[test]
    fn both_versions_verify_with_the_certificate_key() {
        let key = public_key(&SIGNER.certificate_pem());
        let v1 = signature(&SIGNER.sign("1", CANONICAL));
        let v2 = signature(&SIGNER.sign("2", CANONICAL));
        let sha1 = VerifyingKey::<Sha1>::new(key.clone());
        let sha256 = VerifyingKey::<Sha256>::new(key);
        assert!(sha1.verify(CANONICAL.as_bytes(), &v1).is_ok());
        assert!(sha256.verify(CANONICAL.as_bytes(), &v2).is_ok());
        assert!(sha256.verify(CANONICAL.as_bytes(), &v1).is_err());
        assert!(sha1.verify(b"tampered", &v1).is_err());
    }

    #[test]
    fn certificate_names_sns_and_is_self_signed() {
        let certificate = Certificate::from_pem(SIGNER.certificate_pem()).expect("the PEM parses");
        let tbs = certificate.tbs_certificate();
        assert_eq!(tbs.subject().to_string(), "CN=sns.amazonaws.com");
        assert_eq!(tbs.issuer(), tbs.subject());
        let key = VerifyingKey::<Sha256>::new(public_key(&SIGNER.certificate_pem()));
        let tbs_der = tbs.to_der().expect("encode");
        let self_signature = Signature::try_from(certificate.signature().raw_bytes()).expect("a signature");
        assert!(key.verify(&tbs_der, &self_signature).is_ok());
    }

    #[test]
    fn der_round_trip_keeps_the_identity() {
        let (key, certificate) = SIGNER.to_der();
        let restored = Signer::from_der(&key, &certificate).expect("restore");
        assert_eq!(restored.to_der().1, certificate);
        assert_eq!(restored.certificate_pem(), SIGNER.certificate_pem());
        let verifying = VerifyingKey::<Sha256>::new(public_key(&SIGNER.certificate_pem()));
        let signed = signature(&restored.sign("2", CANONICAL));
        assert!(verifying.verify(CANONICAL.as_bytes(), &signed).is_ok());
    }

    #[test]
    fn from_der_rejects_a_certificate_for_another_key() {
        let (key, _) = SIGNER.to_der();
        let (_, other_certificate) = OTHER.to_der();
        assert!(matches!(Signer::from_der(&key, &other_certificate), Err(SigningError::KeyMismatch)));
        assert!(Signer::from_der(b"not a key", &other_certificate).is_err());
        assert!(Signer::from_der(&key, b"not a certificate").is_err());
    }
}
