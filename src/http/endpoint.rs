//! Routes as data: a request path under `/v2/` parsed into an [`Endpoint`], with validated
//! names before any I/O. Repository names contain slashes, so paths are parsed from the right.

use crate::oci::{Digest, NameError, Reference, RepoName, UploadId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    Uploads(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

/// What an endpoint does to a repository, for access control, policy and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reads content.
    Pull,
    /// Writes content.
    Push,
    /// Removes content.
    Delete,
    /// Touches no repository (`/v2/`, `_catalog`).
    None,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// No endpoint has this shape.
    NotFound,
    /// The shape matched but a part is invalid.
    Invalid(NameError),
    /// A manifest or blob path whose reference is outside the grammar: no such content can
    /// exist, so reading or deleting it is answered as not found (what clients and the OCI
    /// conformance suite expect); only a push is refused as invalid.
    Unreachable(Content, NameError),
}

/// The kind of content a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    Manifest,
    Blob,
}

impl From<NameError> for ParseError {
    fn from(e: NameError) -> Self {
        ParseError::Invalid(e)
    }
}

impl Endpoint {
    /// Parses the path after `/v2/` (for example `library/alpine/manifests/latest`).
    pub fn parse(rest: &str) -> Result<Endpoint, ParseError> {
        if rest.is_empty() {
            return Ok(Endpoint::Base);
        }
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let name = |s: &str| -> Result<RepoName, ParseError> { Ok(s.parse::<RepoName>()?) };
        if let Some(n) = rest.strip_suffix("/tags/list") {
            return Ok(Endpoint::Tags(name(n)?));
        }
        if let Some(n) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Ok(Endpoint::Uploads(name(n)?));
        }
        let (head, last) = rest.rsplit_once('/').ok_or(ParseError::NotFound)?;
        if let Some(n) = head.strip_suffix("/blobs/uploads") {
            return Ok(Endpoint::Upload(name(n)?, last.parse()?));
        }
        let (n, kind) = head.rsplit_once('/').ok_or(ParseError::NotFound)?;
        match kind {
            "manifests" => {
                let name = name(n)?;
                let r = last
                    .parse()
                    .map_err(|e| ParseError::Unreachable(Content::Manifest, e))?;
                Ok(Endpoint::Manifest(name, r))
            }
            "blobs" => {
                let name = name(n)?;
                let d = last
                    .parse()
                    .map_err(|e| ParseError::Unreachable(Content::Blob, NameError::from(e)))?;
                Ok(Endpoint::Blob(name, d))
            }
            "referrers" => Ok(Endpoint::Referrers(
                name(n)?,
                last.parse().map_err(NameError::from)?,
            )),
            _ => Err(ParseError::NotFound),
        }
    }

    /// The repository the endpoint addresses, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Tags(n)
            | Endpoint::Manifest(n, _)
            | Endpoint::Blob(n, _)
            | Endpoint::Uploads(n)
            | Endpoint::Upload(n, _)
            | Endpoint::Referrers(n, _) => Some(n),
        }
    }

    /// The same endpoint on another repository (after the cache routed the request).
    pub fn with_repo(self, repo: RepoName) -> Endpoint {
        match self {
            Endpoint::Base | Endpoint::Catalog => self,
            Endpoint::Tags(_) => Endpoint::Tags(repo),
            Endpoint::Manifest(_, r) => Endpoint::Manifest(repo, r),
            Endpoint::Blob(_, d) => Endpoint::Blob(repo, d),
            Endpoint::Uploads(_) => Endpoint::Uploads(repo),
            Endpoint::Upload(_, id) => Endpoint::Upload(repo, id),
            Endpoint::Referrers(_, d) => Endpoint::Referrers(repo, d),
        }
    }

    /// What a request with `method` on this endpoint does.
    /// The endpoint's kind, as the `route` label of metrics: a closed set, never a path.
    pub fn kind(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags(_) => "tags",
            Endpoint::Manifest(..) => "manifest",
            Endpoint::Blob(..) => "blob",
            Endpoint::Uploads(_) => "blob_uploads",
            Endpoint::Upload(..) => "blob_upload",
            Endpoint::Referrers(..) => "referrers",
        }
    }

    pub fn action(&self, method: &axum::http::Method) -> Action {
        use axum::http::Method;
        match self {
            Endpoint::Base | Endpoint::Catalog => Action::None,
            Endpoint::Uploads(_) | Endpoint::Upload(_, _) => Action::Push,
            _ if *method == Method::DELETE => Action::Delete,
            Endpoint::Manifest(_, _) if *method == Method::PUT => Action::Push,
            _ => Action::Pull,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn d() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    #[test]
    fn parses_every_endpoint_shape() {
        assert_eq!(Endpoint::parse(""), Ok(Endpoint::Base));
        assert_eq!(Endpoint::parse("_catalog"), Ok(Endpoint::Catalog));
        assert!(
            matches!(Endpoint::parse("a/b/tags/list"), Ok(Endpoint::Tags(n)) if n.as_str() == "a/b")
        );
        assert!(matches!(
            Endpoint::parse("a/manifests/latest"),
            Ok(Endpoint::Manifest(_, Reference::Tag(_)))
        ));
        assert!(matches!(
            Endpoint::parse(&format!("a/manifests/{}", d())),
            Ok(Endpoint::Manifest(_, Reference::Digest(_)))
        ));
        assert!(
            matches!(Endpoint::parse(&format!("x/blobs/y/blobs/{}", d())), Ok(Endpoint::Blob(n, _)) if n.as_str() == "x/blobs/y")
        );
        assert!(matches!(
            Endpoint::parse("a/blobs/uploads/"),
            Ok(Endpoint::Uploads(_))
        ));
        let id = UploadId::new_random();
        assert!(
            matches!(Endpoint::parse(&format!("a/b/blobs/uploads/{id}")), Ok(Endpoint::Upload(_, u)) if u == id)
        );
        assert!(matches!(
            Endpoint::parse(&format!("a/referrers/{}", d())),
            Ok(Endpoint::Referrers(_, _))
        ));
    }

    #[test]
    fn rejects_bad_parts_and_unknown_shapes() {
        assert!(matches!(
            Endpoint::parse("UPPER/tags/list"),
            Err(ParseError::Invalid(NameError::Repo(_)))
        ));
        assert!(matches!(
            Endpoint::parse("../x/tags/list"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            Endpoint::parse("a//b/manifests/x"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            Endpoint::parse("a/blobs/sha256:zz"),
            Err(ParseError::Unreachable(Content::Blob, NameError::Digest(_)))
        ));
        assert!(matches!(
            Endpoint::parse("a/manifests/.INVALID_MANIFEST_NAME"),
            Err(ParseError::Unreachable(Content::Manifest, NameError::Tag))
        ));
        assert!(matches!(
            Endpoint::parse("a/referrers/sha256:zz"),
            Err(ParseError::Invalid(NameError::Digest(_)))
        ));
        assert!(matches!(
            Endpoint::parse("A/blobs/sha256:zz"),
            Err(ParseError::Invalid(NameError::Repo(_)))
        ));
        assert!(matches!(
            Endpoint::parse("a/blobs/uploads/not-a-uuid"),
            Err(ParseError::Invalid(NameError::Upload))
        ));
        assert_eq!(Endpoint::parse("a/whatever/x"), Err(ParseError::NotFound));
        assert_eq!(Endpoint::parse("nothing"), Err(ParseError::NotFound));
    }

    #[test]
    fn actions_follow_methods() {
        let m = Endpoint::parse("a/manifests/x").unwrap();
        assert_eq!(m.action(&Method::GET), Action::Pull);
        assert_eq!(m.action(&Method::PUT), Action::Push);
        assert_eq!(m.action(&Method::DELETE), Action::Delete);
        assert_eq!(
            Endpoint::parse("a/blobs/uploads/")
                .unwrap()
                .action(&Method::POST),
            Action::Push
        );
        assert_eq!(Endpoint::Catalog.action(&Method::GET), Action::None);
    }
}
