//! Manifest media types and `Accept` negotiation.

pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// Layer types that point at content outside the registry (`urls`), which need not exist here.
pub const FOREIGN_LAYER_TYPES: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// The kinds of manifest the registry stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image or artifact manifest: a config and layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// The kind of a supported manifest media type, or `None`.
pub fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        DOCKER_MANIFEST_V2 | OCI_MANIFEST => Some(ManifestKind::Image),
        DOCKER_MANIFEST_LIST | OCI_INDEX => Some(ManifestKind::Index),
        _ => None,
    }
}

/// The `Accept` a mirror sends upstream: every manifest type it can store and serve, so the
/// upstream never converts (a conversion would change the digest clients pinned).
pub fn manifest_accept() -> String {
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST_V2,
    ]
    .join(", ")
}

/// The media type without parameters, lowercased: `a/b; charset=x` -> `a/b`.
pub fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// True when a media type string has the RFC 6838 `type/subtype` shape.
pub fn is_valid_media_type(mt: &str) -> bool {
    let restricted = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match mt.split_once('/') {
        Some((t, s)) => restricted(t) && restricted(s),
        None => false,
    }
}

/// Whether a stored manifest of `media_type` may be served to a client that sent these
/// `Accept` header values. No header, or a wildcard, accepts anything.
pub fn accepts<'a>(accept_values: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    let mut any = false;
    for value in accept_values {
        for item in value.split(',') {
            let e = essence(item);
            if e.is_empty() {
                continue;
            }
            any = true;
            if (e == "*/*" || e == "application/*" || e == media_type) && !refused(item) {
                return true;
            }
        }
    }
    !any
}

/// True when an `Accept` item carries `q=0` ("not acceptable", RFC 9110 §12.4.2).
fn refused(item: &str) -> bool {
    item.split(';').skip(1).any(|p| {
        p.trim()
            .strip_prefix("q=")
            .or_else(|| p.trim().strip_prefix("Q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .is_some_and(|q| q <= 0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_accept_lists() {
        assert!(accepts([], OCI_MANIFEST));
        assert!(accepts([""], OCI_MANIFEST));
        assert!(accepts(
            [format!("{DOCKER_MANIFEST_V2}, {OCI_MANIFEST};q=0.5").as_str()],
            OCI_MANIFEST
        ));
        assert!(accepts([DOCKER_MANIFEST_V2, OCI_INDEX], OCI_INDEX));
        assert!(!accepts([DOCKER_MANIFEST_V2], OCI_MANIFEST));
        assert!(accepts(["*/*"], OCI_MANIFEST));
        assert!(!accepts(
            [format!("{OCI_MANIFEST};q=0, {DOCKER_MANIFEST_V2}").as_str()],
            OCI_MANIFEST
        ));
        assert!(accepts(
            [format!("{OCI_MANIFEST};q=0.1").as_str()],
            OCI_MANIFEST
        ));
    }

    #[test]
    fn validates_media_types() {
        assert!(is_valid_media_type(OCI_MANIFEST));
        assert!(is_valid_media_type("application/vnd.example+type"));
        assert!(!is_valid_media_type("nope"));
        assert!(!is_valid_media_type("a/b c"));
        assert_eq!(
            essence("Application/JSON; charset=utf-8"),
            "application/json"
        );
    }
}
