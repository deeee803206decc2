//! What a receiver gets: the Distribution registry's notification envelope
//! (`{"events":[...]}`, media type [`MEDIA_TYPE`]) holding one event, and the HMAC-SHA256
//! signature of its exact bytes.

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::ops::events::{Action, Event};

/// The envelope's `Content-Type`, as the Distribution registry sends it.
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// Who sent an event: this berth instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The host name and listen port.
    pub addr: String,
    /// Unique per process start.
    pub instance_id: String,
    /// `http` or `https`, for the target's URL.
    pub scheme: &'static str,
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `key`, as `X-Berth-Signature` carries it.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The envelope of one event, serialized: the exact bytes every attempt sends and signs.
pub fn body(e: &Event, source: &Source) -> String {
    json!({ "events": [event(e, source)] }).to_string()
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.into(), v);
    }
}

fn non_empty(s: &str) -> Option<Value> {
    (!s.is_empty()).then(|| Value::from(s))
}

/// One event in Distribution's shape: `id`, `timestamp`, `action`, `target` (`mediaType`,
/// `size`, `digest`, `length`, `repository`, `url`, `tag`), `request` (`id`, `addr`,
/// `host`, `method`, `useragent`), `actor` (`name`), `source` (`addr`, `instanceID`). Keys
/// with nothing to say are left out, as Distribution does. berth adds `detail` (what a GC
/// run removed, why a push was refused) when there is one.
pub fn event(e: &Event, source: &Source) -> Value {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.time_ms.max(0) as u64);
    let mut target = Map::new();
    let media_type = match (&e.media_type, e.target.as_str()) {
        (Some(m), _) => Some(m.clone()),
        // Distribution names blobs (layers) this way.
        (None, "blob") => Some("application/octet-stream".to_string()),
        (None, _) => None,
    };
    put(&mut target, "mediaType", media_type.map(Value::from));
    put(&mut target, "size", e.size.map(Value::from));
    put(&mut target, "digest", e.digest.clone().map(Value::from));
    put(&mut target, "length", e.size.map(Value::from));
    put(&mut target, "repository", e.repo.clone().map(Value::from));
    put(&mut target, "url", target_url(e, source).map(Value::from));
    put(&mut target, "tag", e.reference.clone().map(Value::from));

    let mut request = Map::new();
    if let Some(r) = &e.request {
        put(&mut request, "id", non_empty(&r.id));
    }
    put(&mut request, "addr", non_empty(&e.addr));
    if let Some(r) = &e.request {
        put(&mut request, "host", non_empty(&r.host));
        put(&mut request, "method", non_empty(&r.method));
        put(&mut request, "useragent", non_empty(&r.user_agent));
    }

    let mut out = Map::new();
    out.insert("id".into(), e.id.clone().into());
    out.insert(
        "timestamp".into(),
        humantime::format_rfc3339_millis(at).to_string().into(),
    );
    out.insert("action".into(), e.action.as_str().into());
    out.insert("target".into(), target.into());
    out.insert("request".into(), request.into());
    out.insert("actor".into(), json!({ "name": e.actor }));
    out.insert(
        "source".into(),
        json!({ "addr": source.addr, "instanceID": source.instance_id }),
    );
    put(&mut out, "detail", non_empty(&e.detail));
    Value::Object(out)
}

/// Where the target can be fetched: `<scheme>://<host>/v2/<repo>/manifests|blobs/<digest>`,
/// when the event came from a request and names a repository and a digest.
fn target_url(e: &Event, source: &Source) -> Option<String> {
    let host = e.request.as_ref().map(|r| r.host.as_str())?;
    let (repo, digest) = (e.repo.as_deref()?, e.digest.as_deref()?);
    if host.is_empty() || e.action == Action::Gc {
        return None;
    }
    let kind = if e.target == "blob" {
        "blobs"
    } else {
        "manifests"
    };
    Some(format!(
        "{}://{host}/v2/{repo}/{kind}/{digest}",
        source.scheme
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::events::RequestInfo;

    fn source() -> Source {
        Source {
            addr: "reg-1:5000".into(),
            instance_id: "5a1e".into(),
            scheme: "https",
        }
    }

    // Computed independently: printf '%s' '{"events":[]}' | openssl dgst -sha256 -hmac 's3cret'
    // and python3 -c "import hmac,hashlib; print(hmac.new(b's3cret', b'{\"events\":[]}',
    // hashlib.sha256).hexdigest())".
    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_exact_body() {
        assert_eq!(
            signature(b"s3cret", br#"{"events":[]}"#),
            "sha256=66e558d03919c6fa065e88fe40f06defe8192f6a30d4aa72fa79bdd775efa48c"
        );
        assert_ne!(
            signature(b"s3cret", br#"{"events": []}"#),
            signature(b"s3cret", br#"{"events":[]}"#)
        );
    }

    #[test]
    fn a_manifest_push_has_distributions_shape() {
        let mut e = Event::new(Action::Push, "manifest", "alice")
            .repo("team/app")
            .reference(Some("v1".into()))
            .digest(Some("sha256:abc".into()));
        e.time_ms = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        e.size = Some(512);
        e.addr = "10.0.0.7".into();
        e.status = 201;
        e.request = Some(RequestInfo {
            id: "req-1".into(),
            method: "PUT".into(),
            host: "registry.example:5000".into(),
            user_agent: "docker/27".into(),
        });
        let v: Value = serde_json::from_str(&body(&e, &source())).unwrap();
        assert_eq!(
            v,
            json!({"events": [{
                "id": e.id,
                "timestamp": "2026-01-01T00:00:00.123Z",
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "size": 512,
                    "digest": "sha256:abc",
                    "length": 512,
                    "repository": "team/app",
                    "url": "https://registry.example:5000/v2/team/app/manifests/sha256:abc",
                    "tag": "v1",
                },
                "request": {
                    "id": "req-1",
                    "addr": "10.0.0.7",
                    "host": "registry.example:5000",
                    "method": "PUT",
                    "useragent": "docker/27",
                },
                "actor": {"name": "alice"},
                "source": {"addr": "reg-1:5000", "instanceID": "5a1e"},
            }]})
        );
    }

    #[test]
    fn a_gc_run_keeps_the_shape_with_what_applies() {
        let e = Event::new(Action::Gc, "registry", "gc").detail("blobs=3 bytes=1024");
        let v = event(&e, &source());
        assert_eq!(v["action"], "gc");
        assert_eq!(v["target"], json!({}));
        assert_eq!(v["request"], json!({"addr": "local"}));
        assert_eq!(v["actor"], json!({"name": "gc"}));
        assert_eq!(v["detail"], "blobs=3 bytes=1024");
        assert_eq!(v["source"]["instanceID"], "5a1e");
        let blob = Event::new(Action::Delete, "blob", "bob")
            .repo("team/app")
            .digest(Some("sha256:def".into()));
        let v = event(&blob, &source());
        assert_eq!(v["target"]["mediaType"], "application/octet-stream");
        assert!(v["target"].get("url").is_none(), "no request, no host");
        assert!(v.get("detail").is_none());
    }
}
