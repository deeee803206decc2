//! Blob uploads (spec: "Pushing blobs", "Pushing a blob in chunks", "Mounting a blob from
//! another repository", "Cancel a blob upload"):
//! `POST /v2/<name>/blobs/uploads/` and `GET`/`PATCH`/`PUT`/`DELETE` on the session URL.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use crate::oci::range::{parse_content_range, upload_range};
use crate::oci::{Algorithm, Digest, RepoName, UploadId};
use crate::registry::{AppendRequest, RegistryError};

use super::auth::Access;
use super::error::{ApiError, ApiResult, Code};
use super::{body_stream, content_length, empty, has_body, AppState, Query};

fn session_location(repo: &RepoName, id: &UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn blob_created(repo: &RepoName, digest: &Digest) -> axum::response::Response {
    let d = digest.to_string();
    empty(
        StatusCode::CREATED,
        &[
            ("location", &format!("/v2/{repo}/blobs/{d}")),
            ("docker-content-digest", &d),
        ],
    )
}

fn session_response(
    status: StatusCode,
    repo: &RepoName,
    id: &UploadId,
    size: u64,
    min_chunk: Option<u64>,
) -> axum::response::Response {
    let mut headers = vec![
        ("location", session_location(repo, id)),
        ("range", upload_range(size)),
        ("docker-upload-uuid", id.to_string()),
    ];
    if let Some(m) = min_chunk {
        headers.push(("oci-chunk-min-length", m.to_string()));
    }
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    empty(status, &refs)
}

fn digest_param(q: &Query, key: &str) -> ApiResult<Option<Digest>> {
    q.get(key)
        .map(|v| {
            v.parse::<Digest>()
                .map_err(|e| ApiError::new(Code::DigestInvalid, format!("{key}: {e}")))
        })
        .transpose()
}

/// Maps an out-of-order chunk to a 416 that tells the client where the session stands.
fn chunk_error(e: RegistryError, repo: &RepoName, id: &UploadId) -> ApiError {
    match e {
        RegistryError::RangeNotSatisfiable { size } => {
            ApiError::out_of_order(&session_location(repo, id), id, size)
        }
        other => other.into(),
    }
}

pub async fn start(
    app: &AppState,
    repo: &RepoName,
    req: &Parts,
    body: Body,
    access: &Access,
) -> ApiResult {
    let q = Query::of(req);
    if let Some(alg) = q.get("digest-algorithm") {
        alg.parse::<Algorithm>()
            .map_err(|e| ApiError::new(Code::DigestInvalid, e.to_string()))?;
    }
    if let Some(mount) = digest_param(&q, "mount")? {
        if let Some(from) = q.get("from") {
            let from: RepoName = from.parse()?;
            // Mounting reads the source: a caller who may not pull from it gets an ordinary
            // session instead, exactly as if the blob were not there.
            if app.gate.may_mount_from(access, req, repo, &from).await?
                && app
                    .registry
                    .mount_blob(repo, &from, &mount)
                    .await?
                    .is_some()
            {
                return Ok(blob_created(repo, &mount));
            }
        }
        // Not mountable: fall through to an ordinary session (202), as the spec asks.
    } else if let Some(digest) = digest_param(&q, "digest")? {
        // Without Content-Length or chunked encoding an HTTP/1.1 body is empty; a chunked
        // body of unknown length is refused, as the spec requires the length up front.
        let length = match content_length(&req.headers)? {
            Some(l) => l,
            None if !has_body(&body) => 0,
            None => {
                return Err(ApiError::new(
                    Code::SizeInvalid,
                    "a monolithic upload needs a Content-Length header",
                ))
            }
        };
        let body = body_stream(body);
        app.registry
            .put_blob(repo, &digest, Some(length), body)
            .await?;
        return Ok(blob_created(repo, &digest));
    }
    let session = app.registry.start_upload(repo).await?;
    Ok(session_response(
        StatusCode::ACCEPTED,
        repo,
        &session.id,
        session.size,
        Some(app.settings.chunk_min_length),
    ))
}

pub async fn status(app: &AppState, repo: &RepoName, id: &UploadId) -> ApiResult {
    let session = app.registry.upload_status(repo, id).await?;
    Ok(session_response(
        StatusCode::NO_CONTENT,
        repo,
        id,
        session.size,
        None,
    ))
}

fn chunk_of(req: &Parts, body: Body) -> ApiResult<AppendRequest> {
    let range = match req.headers.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    ApiError::new(
                        Code::BlobUploadInvalid,
                        "Content-Range must have the form <start>-<end>",
                    )
                })?,
        ),
    };
    let length = content_length(&req.headers)?;
    Ok(AppendRequest {
        range,
        length,
        body: body_stream(body),
    })
}

pub async fn patch(
    app: &AppState,
    repo: &RepoName,
    id: &UploadId,
    req: &Parts,
    body: Body,
) -> ApiResult {
    let chunk = chunk_of(req, body)?;
    let size = app
        .registry
        .append_upload(repo, id, chunk)
        .await
        .map_err(|e| chunk_error(e, repo, id))?;
    Ok(session_response(StatusCode::ACCEPTED, repo, id, size, None))
}

pub async fn complete(
    app: &AppState,
    repo: &RepoName,
    id: &UploadId,
    req: &Parts,
    body: Body,
) -> ApiResult {
    let q = Query::of(req);
    let digest = digest_param(&q, "digest")?.ok_or_else(|| {
        ApiError::new(
            Code::DigestInvalid,
            "the closing PUT needs a digest query parameter",
        )
    })?;
    let last = if has_body(&body) {
        Some(chunk_of(req, body)?)
    } else {
        None
    };
    app.registry
        .complete_upload(repo, id, &digest, last)
        .await
        .map_err(|e| chunk_error(e, repo, id))?;
    Ok(blob_created(repo, &digest))
}

pub async fn cancel(app: &AppState, repo: &RepoName, id: &UploadId) -> ApiResult {
    app.registry.cancel_upload(repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}
