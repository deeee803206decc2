//! The byte-range grammars of blob pulls (`Range: bytes=a-b`) and chunked pushes
//! (`Content-Range: a-b`).

/// An inclusive byte range within a blob of known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The outcome of evaluating a `Range` header against a blob of `size` bytes (RFC 9110 §14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: serve the whole blob with 200.
    Full,
    /// Serve this part with 206.
    Partial(ByteRange),
    /// A well-formed range that lies outside the blob: 416.
    Unsatisfiable,
}

/// Evaluates a `Range` header value. Unknown units, several ranges and syntax errors are
/// ignored (the whole blob is served), as RFC 9110 permits; a range whose end comes before
/// its start is unsatisfiable.
pub fn evaluate_range(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }),
            None => RangeRequest::Full,
        },
        // bytes=N-: from N to the end.
        (false, true) => match num(a) {
            Some(start) if start < size => RangeRequest::Partial(ByteRange {
                start,
                end: size - 1,
            }),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial(ByteRange {
                        start,
                        end: end.min(size - 1),
                    })
                }
            }
            // A last position before the first (`bytes=9-1`) is refused, as Distribution
            // (Go's ServeContent) and the OCI conformance suite expect; RFC 9110 §14.2 lets a
            // server ignore or reject it.
            (Some(_), Some(_)) => RangeRequest::Unsatisfiable,
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// Parses a chunk upload's `Content-Range` (`^[0-9]+-[0-9]+$`, inclusive). Some clients send
/// the RFC form `bytes a-b/*`; that is accepted too.
pub fn parse_content_range(value: &str) -> Option<ByteRange> {
    let v = value.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let v = v.split_once('/').map_or(v, |(r, _)| r);
    let (a, b) = v.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    let (start, end) = (a.parse().ok()?, b.parse().ok()?);
    (start <= end).then_some(ByteRange { start, end })
}

/// The `Range` value of an upload status: `0-<last byte>`. An empty upload reports `0-0`, as
/// the Docker registry always has, because clients parse that shape.
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn evaluates_single_ranges() {
        assert_eq!(evaluate_range("bytes=0-9", 100), p(0, 9));
        assert_eq!(evaluate_range("bytes=90-200", 100), p(90, 99));
        assert_eq!(evaluate_range("bytes=95-", 100), p(95, 99));
        assert_eq!(evaluate_range("bytes=-10", 100), p(90, 99));
        assert_eq!(evaluate_range("bytes=-1000", 100), p(0, 99));
        assert_eq!(
            evaluate_range("bytes=100-", 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            evaluate_range("bytes=100-120", 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(evaluate_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(
            evaluate_range("bytes=5-1", 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(evaluate_range("bytes=0-1,3-4", 100), RangeRequest::Full);
        assert_eq!(evaluate_range("items=0-1", 100), RangeRequest::Full);
        assert_eq!(evaluate_range("bytes=x-1", 100), RangeRequest::Full);
    }

    #[test]
    fn parses_content_ranges() {
        assert_eq!(
            parse_content_range("0-99"),
            Some(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(
            parse_content_range("bytes 5-9/*"),
            Some(ByteRange { start: 5, end: 9 })
        );
        assert_eq!(parse_content_range("9-5"), None);
        assert_eq!(parse_content_range("-5"), None);
        assert_eq!(parse_content_range("a-b"), None);
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }

    proptest! {
        #[test]
        fn content_range_round_trips(start in 0u64..1<<40, len in 1u64..1<<30) {
            let r = ByteRange { start, end: start + len - 1 };
            prop_assert_eq!(parse_content_range(&format!("{}-{}", r.start, r.end)), Some(r));
            prop_assert_eq!(r.len(), len);
        }

        #[test]
        fn partial_ranges_stay_inside_the_blob(a in 0u64..200, b in 0u64..200, size in 1u64..150) {
            if let RangeRequest::Partial(r) = evaluate_range(&format!("bytes={a}-{b}"), size) {
                prop_assert!(r.start <= r.end && r.end < size);
            }
        }
    }
}
