//! Content digests (`algorithm:hex`) for sha256 and sha512, and the streaming hasher that
//! verifies them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm the registry can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded hash.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Box::default()),
            Algorithm::Sha512 => Hasher::Sha512(Box::default()),
        }
    }

    /// The digest of `data` in one call.
    pub fn digest(self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest must have the form algorithm:hex")]
    Malformed,
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("digest hex must be {expected} lowercase hexadecimal characters")]
    BadHex { expected: usize },
}

/// A validated content digest, always lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// True when the string has the shape `alg:encoded` of the digest grammar, whether or not
    /// the algorithm is one we support. Used to tell a digest reference from a tag.
    pub fn looks_like_digest(s: &str) -> bool {
        s.contains(':')
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if alg.is_empty() || hex.is_empty() {
            return Err(DigestError::Malformed);
        }
        let algorithm: Algorithm = alg.parse()?;
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DigestError::BadHex {
                expected: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Box<sha2::Sha256>),
    Sha512(Box<sha2::Sha512>),
}

impl Hasher {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_empty_input() {
        assert_eq!(Algorithm::Sha256.digest(b"").to_string(), EMPTY);
        assert!(Algorithm::Sha512
            .digest(b"")
            .to_string()
            .starts_with("sha512:cf83e1357eefb8bdf1542850d66d8007"));
    }

    #[test]
    fn rejects_bad_digests() {
        assert_eq!("sha256".parse::<Digest>(), Err(DigestError::Malformed));
        assert_eq!(":abc".parse::<Digest>(), Err(DigestError::Malformed));
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            EMPTY
                .to_uppercase()
                .replace("SHA256", "sha256")
                .parse::<Digest>(),
            Err(DigestError::BadHex { expected: 64 })
        ));
        assert!(matches!(
            "sha256:abcd".parse::<Digest>(),
            Err(DigestError::BadHex { .. })
        ));
    }

    proptest! {
        #[test]
        fn digest_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..256), sha512 in any::<bool>()) {
            let alg = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
            let d = alg.digest(&bytes);
            let again: Digest = d.to_string().parse().unwrap();
            prop_assert_eq!(d, again);
        }

        #[test]
        fn chunked_hashing_matches_one_shot(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
            let cut = cut.min(bytes.len());
            let mut h = Algorithm::Sha256.hasher();
            h.update(&bytes[..cut]);
            h.update(&bytes[cut..]);
            prop_assert_eq!(h.finish(), Algorithm::Sha256.digest(&bytes));
        }
    }
}
