//! The API error type and the one place that writes the spec's error body:
//! `{"errors":[{"code","message","detail"}]}`.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::oci::range::upload_range;
use crate::oci::{NameError, UploadId};
use crate::registry::RegistryError;

/// The error codes of the OCI distribution spec (its "Error Codes" table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// code-1: blob unknown to registry.
    BlobUnknown,
    /// code-2: blob upload invalid.
    BlobUploadInvalid,
    /// code-3: blob upload unknown to registry.
    BlobUploadUnknown,
    /// code-4: provided digest did not match uploaded content.
    DigestInvalid,
    /// code-5: manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// code-6: manifest invalid.
    ManifestInvalid,
    /// code-7: manifest unknown to registry.
    ManifestUnknown,
    /// code-8: invalid repository name.
    NameInvalid,
    /// code-9: repository name not known to registry.
    NameUnknown,
    /// code-10: provided length did not match content length.
    SizeInvalid,
    /// code-11: authentication required.
    Unauthorized,
    /// code-12: requested access to the resource is denied.
    Denied,
    /// code-13: the operation is unsupported.
    Unsupported,
    /// code-14: too many requests.
    TooManyRequests,
    /// Not in the spec's table (which covers 4xx answers): a 503 when an upstream registry is
    /// unreachable and nothing is cached, as Distribution's `UNAVAILABLE`.
    Unavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unavailable => "UNAVAILABLE",
        }
    }

    /// The status a code is sent with unless the situation calls for a more specific one.
    pub fn default_status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error response: a code, a status, a message and optional detail, plus extra headers.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<Value>,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Why credentials or permissions refused the request, for
    /// `container_registry_auth_failures_total{reason}`.
    pub auth_failure: Option<&'static str>,
}

/// A response extension: the request was refused for its credentials or permissions.
#[derive(Clone, Copy, Debug)]
pub struct AuthFailure(pub &'static str);

/// A response extension on every error answer: its code and message, for the audit log.
#[derive(Clone, Debug)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
    /// Refused by a namespace's storage quota.
    pub quota: bool,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            status: code.default_status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            auth_failure: None,
        }
    }

    /// Marks a refusal by credentials or permissions, with its reason.
    pub fn auth_failure(mut self, reason: &'static str) -> Self {
        self.auth_failure = Some(reason);
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// A 500 whose cause goes to the log, never to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError {
            code: Code::Unsupported,
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal server error".into(),
            detail: None,
            headers: Vec::new(),
            auth_failure: None,
        }
    }

    /// A 416 for an out-of-order chunk, telling the client where the upload stands.
    pub fn out_of_order(location: &str, id: &UploadId, size: u64) -> Self {
        ApiError::new(
            Code::BlobUploadInvalid,
            format!("chunk out of order: the upload holds {size} bytes"),
        )
        .status(StatusCode::RANGE_NOT_SATISFIABLE)
        .header(header::LOCATION, location)
        .header(header::RANGE, &upload_range(size))
        .header(
            header::HeaderName::from_static("docker-upload-uuid"),
            id.as_str(),
        )
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::Repo(_) => ApiError::new(Code::NameInvalid, e.to_string()),
            NameError::Tag => ApiError::new(Code::ManifestInvalid, e.to_string()),
            NameError::Digest(_) => ApiError::new(Code::DigestInvalid, e.to_string()),
            NameError::Upload => ApiError::new(Code::BlobUploadUnknown, "upload session unknown"),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::BlobUnknown(d) => {
                ApiError::new(Code::BlobUnknown, msg).detail(json!({ "digest": d }))
            }
            RegistryError::UploadUnknown => ApiError::new(Code::BlobUploadUnknown, msg),
            RegistryError::UploadInvalid(_) => ApiError::new(Code::BlobUploadInvalid, msg),
            RegistryError::RangeNotSatisfiable { .. } => {
                ApiError::new(Code::BlobUploadInvalid, msg)
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
            }
            RegistryError::DigestInvalid(_) => ApiError::new(Code::DigestInvalid, msg),
            RegistryError::SizeInvalid(_) => ApiError::new(Code::SizeInvalid, msg),
            RegistryError::ManifestUnknown(_) => ApiError::new(Code::ManifestUnknown, msg),
            RegistryError::ManifestInvalid(_) => ApiError::new(Code::ManifestInvalid, msg),
            RegistryError::ManifestTooLarge { .. } => {
                ApiError::new(Code::ManifestInvalid, msg).status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            RegistryError::ManifestBlobUnknown(missing) => {
                ApiError::new(Code::ManifestBlobUnknown, msg).detail(json!({ "missing": missing }))
            }
            RegistryError::NameUnknown(name) => {
                ApiError::new(Code::NameUnknown, msg).detail(json!({ "name": name.as_str() }))
            }
            RegistryError::Unsupported(_) => ApiError::new(Code::Unsupported, msg),
            RegistryError::RangeUnsatisfiable { size } => ApiError::new(Code::SizeInvalid, msg)
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, &format!("bytes */{size}")),
            RegistryError::Denied(_) => ApiError::new(Code::Denied, msg),
            RegistryError::TooManyRequests { retry_after, .. } => {
                with_retry_after(ApiError::new(Code::TooManyRequests, msg), retry_after)
            }
            RegistryError::Unavailable { retry_after, .. } => {
                with_retry_after(ApiError::new(Code::Unavailable, msg), retry_after)
            }
            RegistryError::BodyFailed(_) => {
                ApiError::new(Code::BlobUploadInvalid, "request body ended early")
            }
            RegistryError::Storage(e) => ApiError::internal(&e),
            RegistryError::Metadata(e) => ApiError::internal(&e),
        }
    }
}

/// `Retry-After` in whole seconds, rounded up so a client waiting it is not refused again.
pub fn with_retry_after(e: ApiError, wait: Option<std::time::Duration>) -> ApiError {
    match wait {
        Some(w) => {
            let secs = (w.as_secs() + u64::from(w.subsec_nanos() > 0)).max(1);
            e.header(header::RETRY_AFTER, &secs.to_string())
        }
        None => e,
    }
}

impl From<crate::metadata::MetadataError> for ApiError {
    fn from(e: crate::metadata::MetadataError) -> Self {
        ApiError::internal(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let failure = Failure {
            code: self.code.as_str(),
            quota: self.code == Code::Denied
                && self.message.contains(crate::registry::quota::REFUSAL),
            message: self.message.clone(),
        };
        let mut err = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let body = json!({ "errors": [err] }).to_string();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in self.headers {
            h.append(k, v);
        }
        let reason = self
            .auth_failure
            .or((self.status == StatusCode::UNAUTHORIZED).then_some("unauthorized"));
        if let Some(r) = reason {
            resp.extensions_mut().insert(AuthFailure(r));
        }
        resp.extensions_mut().insert(failure);
        resp
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;
