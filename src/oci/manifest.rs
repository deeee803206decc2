//! Manifest and index parsing: just enough structure to validate what a client pushes and to
//! learn what it references. The bytes themselves are stored as sent, never re-serialized.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::digest::Digest;
use super::media::{self, ManifestKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest has no mediaType field and the request no Content-Type")]
    MissingMediaType,
    #[error("{0}")]
    Invalid(String),
}

/// A content descriptor as it appears in manifests and indexes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(skip)]
    pub urls: Vec<String>,
    /// `os/architecture[/variant]`, for the children of an index that say.
    #[serde(skip)]
    pub platform: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    urls: Option<Vec<String>>,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What the registry needs to know about a manifest it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The effective media type: the body's `mediaType`, else the request's `Content-Type`.
    pub media_type: String,
    pub kind: ManifestKind,
    /// Blobs that must exist in the repository: config and layers (foreign layers excluded).
    pub blobs: Vec<Descriptor>,
    /// Child manifests that must exist in the repository (indexes only).
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// The `artifactType` the referrers API reports for this manifest.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

fn descriptor(raw: RawDescriptor, field: &str) -> Result<Descriptor, ManifestError> {
    let invalid = |what: &str| ManifestError::Invalid(format!("{field}: {what}"));
    let media_type = raw
        .media_type
        .ok_or_else(|| invalid("mediaType is required"))?;
    if !media::is_valid_media_type(&media_type) {
        return Err(invalid("mediaType is not a valid media type"));
    }
    let digest = raw
        .digest
        .ok_or_else(|| invalid("digest is required"))?
        .parse::<Digest>()
        .map_err(|e| invalid(&e.to_string()))?;
    let size = raw.size.ok_or_else(|| invalid("size is required"))?;
    let size = u64::try_from(size).map_err(|_| invalid("size must not be negative"))?;
    if let Some(at) = &raw.artifact_type {
        if !media::is_valid_media_type(at) {
            return Err(invalid("artifactType is not a valid media type"));
        }
    }
    Ok(Descriptor {
        media_type,
        digest,
        size,
        artifact_type: raw.artifact_type,
        annotations: raw.annotations,
        urls: raw.urls.unwrap_or_default(),
        platform: raw.platform.and_then(|p| {
            let mut s = format!("{}/{}", p.os?, p.architecture?);
            if let Some(v) = p.variant.filter(|v| !v.is_empty()) {
                s.push('/');
                s.push_str(&v);
            }
            Some(s)
        }),
    })
}

fn descriptors(raw: Vec<RawDescriptor>, field: &str) -> Result<Vec<Descriptor>, ManifestError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, d)| descriptor(d, &format!("{field}[{i}]")))
        .collect()
}

/// Parses and validates manifest bytes pushed with the given `Content-Type`.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let header = content_type
        .map(media::essence)
        .filter(|h| !h.is_empty() && h != "application/octet-stream" && h != "application/json");
    let media_type = match (&raw.media_type, header) {
        (Some(body), Some(header)) if *body != header => {
            return Err(ManifestError::MediaTypeMismatch {
                header,
                body: body.clone(),
            })
        }
        (Some(body), _) => body.clone(),
        (None, Some(header)) => header,
        (None, None) => return Err(ManifestError::MissingMediaType),
    };
    if media_type == media::DOCKER_MANIFEST_V1 || media_type == media::DOCKER_MANIFEST_V1_SIGNED {
        return Err(ManifestError::UnsupportedMediaType(format!(
            "{media_type} (Docker schema 1 is deprecated; push schema 2 or OCI)"
        )));
    }
    let kind = media::manifest_kind(&media_type)
        .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::Invalid("schemaVersion must be 2".into()));
    }
    let subject = raw.subject.map(|s| descriptor(s, "subject")).transpose()?;
    if let Some(at) = &raw.artifact_type {
        if !media::is_valid_media_type(at) {
            return Err(ManifestError::Invalid(
                "artifactType is not a valid media type".into(),
            ));
        }
    }
    match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::Invalid(
                    "an image manifest has no manifests field".into(),
                ));
            }
            let config = descriptor(
                raw.config.ok_or_else(|| {
                    ManifestError::Invalid("config descriptor is required".into())
                })?,
                "config",
            )?;
            let layers = descriptors(raw.layers.unwrap_or_default(), "layers")?;
            let artifact_type = raw
                .artifact_type
                .clone()
                .or_else(|| Some(config.media_type.clone()));
            let mut blobs = vec![config];
            blobs.extend(layers.into_iter().filter(|l| {
                l.urls.is_empty() || !media::FOREIGN_LAYER_TYPES.contains(&l.media_type.as_str())
            }));
            Ok(ParsedManifest {
                media_type,
                kind,
                blobs,
                children: Vec::new(),
                subject,
                artifact_type,
                annotations: raw.annotations,
            })
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::Invalid(
                    "an index has no config or layers field".into(),
                ));
            }
            let children = descriptors(
                raw.manifests
                    .ok_or_else(|| ManifestError::Invalid("manifests field is required".into()))?,
                "manifests",
            )?;
            Ok(ParsedManifest {
                media_type,
                kind,
                blobs: Vec::new(),
                children,
                subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn image(media: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":7}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":9}}]}}"#,
            d(1),
            d(2)
        )
    }

    #[test]
    fn parses_an_image_manifest() {
        let m = parse(image(OCI_MANIFEST).as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let m = parse(image(DOCKER_MANIFEST_V2).as_bytes(), None).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST_V2);
    }

    #[test]
    fn rejects_mismatched_or_missing_media_types() {
        assert!(matches!(
            parse(image(OCI_MANIFEST).as_bytes(), Some(DOCKER_MANIFEST_V2)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let no_mt = image(OCI_MANIFEST).replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "");
        assert_eq!(
            parse(no_mt.as_bytes(), None),
            Err(ManifestError::MissingMediaType)
        );
        assert!(parse(no_mt.as_bytes(), Some(OCI_MANIFEST)).is_ok());
        assert!(matches!(
            parse(image("text/plain").as_bytes(), None),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn rejects_malformed_bodies() {
        assert!(matches!(parse(b"{", None), Err(ManifestError::Json(_))));
        assert!(matches!(parse(b"[]", None), Err(ManifestError::Json(_))));
        let bad_digest = image(OCI_MANIFEST).replace(&d(2), "sha256:xyz");
        assert!(matches!(
            parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Invalid(_))
        ));
        let negative = image(OCI_MANIFEST).replace("\"size\":9", "\"size\":-1");
        assert!(parse(negative.as_bytes(), None).is_err());
        let v1 = image(OCI_MANIFEST).replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(parse(v1.as_bytes(), None).is_err());
    }

    #[test]
    fn parses_an_index_with_subject_and_artifact_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","artifactType":"application/x.sig","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":4}},"annotations":{{"a":"b"}}}}"#,
            d(3),
            d(4)
        );
        let m = parse(body.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.children.len(), 1);
        assert_eq!(m.subject.unwrap().digest.to_string(), d(4));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.annotations.unwrap()["a"], "b");
    }
}
