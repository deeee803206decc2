//! Repository names, tags, manifest references and upload ids, validated when built so that
//! nothing downstream ever sees a name outside the spec's grammar.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Longest repository name we accept. Clients cap `host/name` at 255 characters.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec allows.
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid repository name: {0}")]
    Repo(&'static str),
    #[error("invalid tag: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag,
    #[error("invalid digest: {0}")]
    Digest(#[from] DigestError),
    #[error("invalid upload id")]
    Upload,
}

/// A repository name: `component(/component)*`, each component
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the namespace that access control is scoped by.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

fn valid_component(c: &str) -> Result<(), NameError> {
    let b = c.as_bytes();
    if b.is_empty() {
        return Err(NameError::Repo("empty path component"));
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(NameError::Repo(
            "components must start and end with a lowercase letter or digit",
        ));
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            if !matches!(b[i], b'.' | b'_' | b'-') {
                return Err(NameError::Repo(
                    "only lowercase letters, digits, '.', '_', '-' and '/' are allowed",
                ));
            }
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(NameError::Repo("invalid separator sequence"));
        }
    }
    Ok(())
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Repo("empty name"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::Repo("longer than 255 characters"));
        }
        s.split('/').try_for_each(valid_component)?;
        Ok(RepoName(s.to_string()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && word(b[0])
            && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-');
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::Tag)
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// The tag, when the reference is one.
    pub fn tag(&self) -> Option<&Tag> {
        match self {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Digest::looks_like_digest(s) {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// An upload session id: a UUID in its hyphenated lowercase form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    pub fn new_random() -> Self {
        UploadId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let u = uuid::Uuid::parse_str(s).map_err(|_| NameError::Upload)?;
        let canonical = u.hyphenated().to_string();
        if canonical == s {
            Ok(UploadId(canonical))
        } else {
            Err(NameError::Upload)
        }
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repository_names_follow_the_grammar() {
        for ok in [
            "a",
            "library/alpine",
            "a/b/c",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "0x",
            "team-a/app.v2/x_y",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok} should be valid");
        }
        for bad in [
            "", "../x", "UPPER", "a//b", "/a", "a/", "a..b", "a___b", "a_-b", "-a", "a-", "a.",
            "a b", "a/./b", "é",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad} should be invalid");
        }
        assert!("a".repeat(256).parse::<RepoName>().is_err());
        assert_eq!("team/app".parse::<RepoName>().unwrap().namespace(), "team");
    }

    #[test]
    fn tags_follow_the_grammar() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn references_tell_tags_from_digests() {
        assert!(matches!(
            "latest".parse::<Reference>(),
            Ok(Reference::Tag(_))
        ));
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!(
            "sha256:zz".parse::<Reference>(),
            Err(NameError::Digest(_))
        ));
    }

    #[test]
    fn upload_ids_are_canonical_uuids() {
        let id = UploadId::new_random();
        assert_eq!(id.as_str().parse::<UploadId>().unwrap(), id);
        assert!("../../etc".parse::<UploadId>().is_err());
        assert!(id.as_str().to_uppercase().parse::<UploadId>().is_err());
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(name in "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}){0,3}") {
            let parsed: RepoName = name.parse().unwrap();
            prop_assert_eq!(parsed.to_string(), name);
        }

        #[test]
        fn valid_tags_round_trip(tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            prop_assert_eq!(tag.parse::<Tag>().unwrap().to_string(), tag);
        }
    }
}
