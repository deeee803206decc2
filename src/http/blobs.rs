//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>` (spec: "Pulling blobs", "Checking if
//! content exists in the registry", "Deleting Blobs").

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use crate::oci::range::{evaluate_range, RangeRequest};
use crate::oci::{Digest, RepoName};

use super::error::{ApiError, ApiResult, Code};
use super::{empty, AppState};

pub async fn get(
    app: &AppState,
    repo: &RepoName,
    digest: &Digest,
    req: &Parts,
    with_body: bool,
) -> ApiResult {
    let size = app.registry.stat_blob(repo, digest).await?;
    let range = match req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if with_body => evaluate_range(v, size),
        _ => RangeRequest::Full,
    };
    let (status, part) = match range {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        RangeRequest::Unsatisfiable => {
            return Err(
                ApiError::new(Code::SizeInvalid, "requested range not satisfiable")
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, &format!("bytes */{size}")),
            )
        }
    };
    let length = part.map_or(size, |r| r.len());
    let body = if with_body && length > 0 {
        Body::from_stream(app.registry.read_blob(repo, digest, part).await?)
    } else {
        Body::empty()
    };
    let mut resp = Response::new(body);
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
    if let Some(r) = part {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end)).expect("ASCII"),
        );
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
