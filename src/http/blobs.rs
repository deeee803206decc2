//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>` (spec: "Pulling blobs", "Checking if
//! content exists in the registry", "Deleting Blobs").

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use crate::oci::{Digest, RepoName};

use super::error::ApiResult;
use super::{empty, AppState};

pub async fn get(
    app: &AppState,
    repo: &RepoName,
    digest: &Digest,
    req: &Parts,
    with_body: bool,
) -> ApiResult {
    let range = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let reply = app.registry.blob(repo, digest, range, with_body).await?;
    let size = reply.size;
    if let Some(url) = reply.redirect {
        // The bytes come straight from the object store (spec: "Pulling blobs" allows a
        // redirect to another location).
        let mut resp = empty(
            StatusCode::TEMPORARY_REDIRECT,
            &[("docker-content-digest", &digest.to_string())],
        );
        let location = HeaderValue::from_str(&url).map_err(|_| {
            super::error::ApiError::internal(&"presigned URL is not a header value")
        })?;
        resp.headers_mut().insert(header::LOCATION, location);
        return Ok(resp);
    }
    let (status, length) = match reply.part {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.len()),
        None => (StatusCode::OK, size),
    };
    let mut resp = Response::new(reply.body.map_or_else(Body::empty, Body::from_stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let d = digest.to_string();
    h.insert(header::CONTENT_LENGTH, length.into());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&d).expect("digest is ASCII"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{d}\"")).expect("ASCII"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    if let Some(r) = reply.part {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end)).expect("ASCII"),
        );
    }
    if let Some(c) = reply.cache {
        h.insert(super::CACHE_HEADER, HeaderValue::from_static(c.as_str()));
    }
    Ok(resp)
}

pub async fn delete(app: &AppState, repo: &RepoName, digest: &Digest) -> ApiResult {
    app.registry.delete_blob(repo, digest).await?;
    Ok(empty(
        StatusCode::ACCEPTED,
        &[("docker-content-digest", &digest.to_string())],
    ))
}
