//! `GET /v2/<name>/tags/list`, `GET /v2/_catalog` and `GET /v2/<name>/referrers/<digest>`
//! (spec: "Listing Tags", "Listing Referrers"), with `n`/`last` pagination and RFC 5988
//! `Link` headers.

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::json;

use crate::metadata::Page;
use crate::oci::{media, Digest, RepoName};

use super::auth::Access;
use super::error::{ApiError, ApiResult, Code};
use super::{json_response, AppState, Query};

/// Largest page served; a larger `n` gets this many and a `Link` to the rest.
const MAX_PAGE: u32 = 10_000;
/// Catalog page size when the client gives no `n`.
const DEFAULT_CATALOG_PAGE: u32 = 1_000;

fn page_size(q: &Query) -> ApiResult<Option<u32>> {
    match q.get("n") {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(|n| Some(n.min(MAX_PAGE as u64) as u32))
            .map_err(|_| {
                ApiError::new(Code::Unsupported, "n must be a non-negative integer")
                    .status(StatusCode::BAD_REQUEST)
            }),
    }
}

fn with_link(mut resp: Response, base: &str, page: &Page, n: Option<u32>) -> Response {
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let mut link = format!(
            "<{base}?last={}",
            utf8_percent_encode(last, NON_ALPHANUMERIC)
        );
        if let Some(n) = n {
            link.push_str(&format!("&n={n}"));
        }
        link.push_str(">; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

pub async fn tags(app: &AppState, repo: &RepoName, req: &Parts) -> ApiResult {
    let q = Query::of(req);
    let n = page_size(&q)?;
    let page = app.registry.list_tags(repo, q.get("last"), n).await?;
    let body = json!({ "name": repo.as_str(), "tags": page.items }).to_string();
    let base = format!("/v2/{repo}/tags/list");
    Ok(with_link(
        json_response(StatusCode::OK, body),
        &base,
        &page,
        n,
    ))
}

/// The catalog lists only repositories the caller may pull from.
pub async fn catalog(app: &AppState, req: &Parts, access: &Access) -> ApiResult {
    let q = Query::of(req);
    let n = page_size(&q)?.unwrap_or(DEFAULT_CATALOG_PAGE);
    let visible = app.gate.visibility(access).await?;
    let page = app
        .registry
        .catalog(q.get("last"), n, &|name: &str| visible.shows(name))
        .await?;
    let body = json!({ "repositories": page.items }).to_string();
    Ok(with_link(
        json_response(StatusCode::OK, body),
        "/v2/_catalog",
        &page,
        Some(n),
    ))
}

pub async fn referrers(
    app: &AppState,
    repo: &RepoName,
    subject: &Digest,
    req: &Parts,
) -> ApiResult {
    let q = Query::of(req);
    let filter = q.get("artifactType").filter(|s| !s.is_empty());
    let manifests = app.registry.referrers(repo, subject, filter).await?;
    let body = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let mut resp = json_response(StatusCode::OK, body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media::OCI_INDEX),
    );
    if filter.is_some() {
        h.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
