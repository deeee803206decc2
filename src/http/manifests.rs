//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>` (spec: "Pulling manifests",
//! "Pushing Manifests", "Pushing Manifests with Subject", "Deleting tags", "Deleting
//! Manifests").

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;

use crate::oci::media;
use crate::oci::{Reference, RepoName, Tag};
use crate::registry::RegistryError;

use super::error::{ApiError, ApiResult, Code};
use super::{body_stream, content_length, empty, AppState, Query};

pub async fn get(
    app: &AppState,
    repo: &RepoName,
    reference: &Reference,
    req: &Parts,
    with_body: bool,
) -> ApiResult {
    let reply = app.registry.manifest(repo, reference, with_body).await?;
    let (record, bytes) = (reply.record, reply.bytes);
    let accept = req
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    if !media::accepts(accept, &record.media_type) {
        return Err(ApiError::new(
            Code::ManifestUnknown,
            format!(
                "manifest is a {} but the Accept header does not include it",
                record.media_type
            ),
        ));
    }
    let digest = record.digest.to_string();
    let etag = format!("\"{digest}\"");
    let not_modified = req
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let (status, body) = match bytes {
        _ if not_modified => (StatusCode::NOT_MODIFIED, Body::empty()),
        Some(b) => (StatusCode::OK, Body::from(b)),
        None => (StatusCode::OK, Body::empty()),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let ascii = |s: &str| HeaderValue::from_str(s).expect("header values are ASCII");
    h.insert(header::CONTENT_TYPE, ascii(&record.media_type));
    h.insert(header::CONTENT_LENGTH, record.size.into());
    h.insert("docker-content-digest", ascii(&digest));
    h.insert(header::ETAG, ascii(&etag));
    if let Some(c) = reply.cache {
        h.insert(super::CACHE_HEADER, HeaderValue::from_static(c.as_str()));
    }
    Ok(resp)
}

/// Reads a manifest body, refusing more than `limit` bytes with 413.
async fn read_limited(body: Body, limit: u64) -> ApiResult<Bytes> {
    let too_large = || RegistryError::ManifestTooLarge { limit }.into();
    let mut stream = body_stream(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|_| ApiError::new(Code::ManifestInvalid, "request body ended early"))?
    {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub async fn put(
    app: &AppState,
    repo: &RepoName,
    reference: &Reference,
    req: &Parts,
    body: Body,
) -> ApiResult {
    let limit = app.registry.policy().manifest_max_bytes;
    if content_length(&req.headers)?.is_some_and(|l| l > limit) {
        return Err(RegistryError::ManifestTooLarge { limit }.into());
    }
    let q = Query::of(req);
    let extra_tags = q
        .all("tag")
        .map(|t| t.parse::<Tag>().map_err(ApiError::from))
        .collect::<ApiResult<Vec<_>>>()?;
    if !extra_tags.is_empty() && matches!(reference, Reference::Tag(_)) {
        return Err(ApiError::new(
            Code::ManifestInvalid,
            "tag query parameters are only allowed when pushing by digest",
        ));
    }
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_limited(body, limit).await?;
    let put = app
        .registry
        .put_manifest(
            repo,
            reference,
            content_type.as_deref(),
            body,
            extra_tags.clone(),
        )
        .await?;
    let d = put.digest.to_string();
    let location = format!("/v2/{repo}/manifests/{d}");
    let mut headers: Vec<(&str, String)> =
        vec![("location", location), ("docker-content-digest", d)];
    if let Some(s) = &put.subject {
        headers.push(("oci-subject", s.to_string()));
    }
    for t in &extra_tags {
        headers.push(("oci-tag", t.to_string()));
    }
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Ok(empty(StatusCode::CREATED, &refs))
}

pub async fn delete(app: &AppState, repo: &RepoName, reference: &Reference) -> ApiResult {
    app.registry.delete_manifest(repo, reference).await?;
    Ok(empty(StatusCode::ACCEPTED, &[]))
}
