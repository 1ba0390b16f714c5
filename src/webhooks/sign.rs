//! Standard Webhooks signing (<https://www.standardwebhooks.com>): the receiver checks
//! `webhook-signature` = `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")) with
//! the secret it shares with this server, and rejects old timestamps (replays).

use anyhow::Context;
use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signing key: `whsec_` and base64 of 24 to 64 random bytes (the prefix may be left out).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let encoded = text.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        let key = STANDARD.decode(encoded).context("webhook_secret must be whsec_ followed by base64")?;
        anyhow::ensure!(
            (24..=64).contains(&key.len()),
            "webhook_secret must hold 24 to 64 bytes (it holds {}); make one with: openssl rand -base64 32",
            key.len()
        );
        Ok(Self(key))
    }

    /// The `webhook-signature` header for one message.
    pub fn sign(&self, id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(format!("{id}.{timestamp_secs}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification and its reference libraries.
    #[test]
    fn signs_the_specification_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // Any change to the id, time or body changes the signature.
        assert_ne!(secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, br#"{"test": 2432232314}"#), signature);
        assert_ne!(secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232315}"#), signature);
    }

    #[test]
    fn secrets_are_checked() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok(), "the prefix is optional");
        assert!(Secret::parse("whsec_not base64!").unwrap_err().to_string().contains("base64"));
        assert!(Secret::parse("whsec_c2hvcnQ=").unwrap_err().to_string().contains("24 to 64 bytes"));
        assert_eq!(format!("{:?}", Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()), "Secret(…)");
    }
}
