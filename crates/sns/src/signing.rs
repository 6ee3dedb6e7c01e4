//! How SNS signs what it delivers to HTTP/S endpoints and SQS queues: notifications and
//! subscription confirmations carry a `Signature` over a canonical string of their fields,
//! made with the key whose certificate is served at `SigningCertURL`.
//!
//! Stratus has one identity (an RSA-2048 key and a self-signed certificate) per installation;
//! the caller stores it with [`Signer::to_der`] so subscribers that cached the certificate keep
//! verifying after a restart.
//!
//! OpenSSL rather than a pure-Rust RSA: every enveloped delivery is signed, and here OpenSSL
//! signs with a 2048-bit key in 0.3 ms where the `rsa` crate took 1.6-2.3 ms, which bounded a
//! whole Stratus to a few hundred deliveries a second.

use base64::{Engine, prelude::BASE64_STANDARD};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509, X509NameBuilder};

/// The names SNS signs for a `Notification`, in byte order.
const NOTIFICATION_FIELDS: [&str; 6] = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"];
/// The names SNS signs for a `SubscriptionConfirmation` or `UnsubscribeConfirmation`, in byte order.
const CONFIRMATION_FIELDS: [&str; 7] =
    ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"];

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("OpenSSL failed")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("the certificate is not for this key")]
    KeyMismatch,
}

/// A signing key and its certificate.
pub struct Signer {
    key: PKey<Private>,
    certificate: X509,
}

impl Signer {
    /// A fresh RSA-2048 key and a self-signed certificate for `sns.amazonaws.com`, valid for ten
    /// years, that may only sign.
    pub fn generate() -> Result<Signer, SigningError> {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", "sns.amazonaws.com")?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        builder.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&key)?;
        builder.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
        builder.set_not_after(Asn1Time::days_from_now(3650)?.as_ref())?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Ok(Signer { key, certificate: builder.build() })
    }

    /// (the key as PKCS#8 DER, the certificate as DER)
    pub fn to_der(&self) -> (Vec<u8>, Vec<u8>) {
        // Encoding a key and a certificate this process made or loaded does not fail.
        let key = self.key.private_key_to_pkcs8().unwrap_or_default();
        (key, self.certificate.to_der().unwrap_or_default())
    }

    /// Restores what [`Signer::to_der`] gave, refusing a certificate made for another key.
    pub fn from_der(key_pkcs8: &[u8], certificate: &[u8]) -> Result<Signer, SigningError> {
        let key = PKey::private_key_from_pkcs8(key_pkcs8)?;
        let certificate = X509::from_der(certificate)?;
        if !certificate.public_key()?.public_eq(&key) {
            return Err(SigningError::KeyMismatch);
        }
        Ok(Signer { key, certificate })
    }

    pub fn certificate_pem(&self) -> String {
        String::from_utf8_lossy(&self.certificate.to_pem().unwrap_or_default()).into_owned()
    }

    /// The base64 signature of `canonical`: SignatureVersion "2" is SHA256withRSA, anything else
    /// SHA1withRSA (version "1", SNS's default). Both are RSASSA-PKCS1-v1_5.
    pub fn sign(&self, signature_version: &str, canonical: &str) -> String {
        let digest = if signature_version == "2" { MessageDigest::sha256() } else { MessageDigest::sha1() };
        let signature = openssl::sign::Signer::new(digest, &self.key)
            .and_then(|mut signer| signer.sign_oneshot_to_vec(canonical.as_bytes()));
        match signature {
            Ok(signature) => BASE64_STANDARD.encode(signature),
            Err(error) => {
                // Only a broken OpenSSL gets here; an unverifiable signature says so to the
                // subscriber, which is better than not delivering.
                tracing::error!(%error, "signing an SNS message failed");
                String::new()
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use openssl::sign::Verifier;

    use super::*;

    // The tests share two identities rather than make one each.
    static SIGNER: LazyLock<Signer> = LazyLock::new(|| Signer::generate().expect("generate a signer"));
    static OTHER: LazyLock<Signer> = LazyLock::new(|| Signer::generate().expect("generate a signer"));

    const CANONICAL: &str = "Message\nhello\nMessageId\n1\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n";

    /// Verifies as a subscriber does: with the public key of the certificate read from PEM.
    fn verifies(pem: &str, digest: MessageDigest, data: &[u8], signature: &str) -> bool {
        let certificate = X509::from_pem(pem.as_bytes()).expect("the PEM parses");
        let key = certificate.public_key().expect("a public key");
        let signature = BASE64_STANDARD.decode(signature).expect("base64");
        let mut verifier = Verifier::new(digest, &key).expect("a verifier");
        verifier.verify_oneshot(&signature, data).unwrap_or(false)
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
        let pem = SIGNER.certificate_pem();
        let (v1, v2) = (SIGNER.sign("1", CANONICAL), SIGNER.sign("2", CANONICAL));
        assert!(verifies(&pem, MessageDigest::sha1(), CANONICAL.as_bytes(), &v1));
        assert!(verifies(&pem, MessageDigest::sha256(), CANONICAL.as_bytes(), &v2));
        assert!(!verifies(&pem, MessageDigest::sha256(), CANONICAL.as_bytes(), &v1));
        assert!(!verifies(&pem, MessageDigest::sha1(), b"tampered", &v1));
    }

    #[test]
    fn certificate_names_sns_and_is_self_signed() {
        let certificate = X509::from_pem(SIGNER.certificate_pem().as_bytes()).expect("the PEM parses");
        let cn = certificate.subject_name().entries().next().expect("a name").data().to_string();
        assert_eq!(cn.expect("utf-8"), "sns.amazonaws.com");
        assert!(certificate.verify(&certificate.public_key().expect("a key")).expect("verifies"));
    }

    #[test]
    fn der_round_trip_keeps_the_identity() {
        let (key, certificate) = SIGNER.to_der();
        let restored = Signer::from_der(&key, &certificate).expect("restore");
        assert_eq!(restored.to_der().1, certificate);
        assert_eq!(restored.certificate_pem(), SIGNER.certificate_pem());
        let signed = restored.sign("2", CANONICAL);
        assert!(verifies(&SIGNER.certificate_pem(), MessageDigest::sha256(), CANONICAL.as_bytes(), &signed));
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
