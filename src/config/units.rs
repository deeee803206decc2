//! Values people write in configuration: durations (`90s`, `1h`, `7d`) and byte sizes
//! (`512MiB`, `200GiB`, `10GB`, or a plain number of bytes).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `humantime` reads it: `30s`, `15m`, `1h`, `7d`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Span)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. 90s, 15m, 1h or 7d"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Raw::Secs(n) => Ok(Span(Duration::from_secs(n))),
        }
    }
}

/// A number of bytes: a plain integer, or with a unit: `KB`, `MB`, `GB`, `TB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); `B` and no unit are bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = (t[..split].trim(), t[split..].trim());
        let scale: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "m" | "mb" => 1000u64.pow(2),
            "g" | "gb" => 1000u64.pow(3),
            "t" | "tb" => 1000u64.pow(4),
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(format!("invalid size {s:?}: unknown unit {unit:?}")),
        };
        let value: f64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: write e.g. 512MiB or 200GiB"))?;
        if !(value >= 0.0 && value.is_finite()) {
            return Err(format!("invalid size {s:?}"));
        }
        Ok(Bytes((value * scale as f64).round() as u64))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Bytes {
    /// For people: `9.8 GiB`, `300 MiB`, `512 B`.
    pub fn human(self) -> String {
        crate::oci::size::human(self.0)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Raw::Number(n) => Ok(Bytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("200GiB".parse::<Bytes>().unwrap().0, 200 << 30);
        assert_eq!("10 GB".parse::<Bytes>().unwrap().0, 10_000_000_000);
        assert_eq!("1.5MiB".parse::<Bytes>().unwrap().0, 3 << 19);
        assert_eq!("4096".parse::<Bytes>().unwrap().0, 4096);
        assert!("12 parsecs".parse::<Bytes>().is_err());
        assert!("-1GiB".parse::<Bytes>().is_err());
        assert_eq!(Bytes(200 << 30).to_string(), "200GiB");
        assert_eq!(Bytes(1000).to_string(), "1000");
        assert_eq!(Bytes((98 << 30) / 10).human(), "9.8 GiB");
        assert_eq!(Bytes(300 << 20).human(), "300 MiB");
    }

    #[test]
    fn spans_parse_and_print() {
        assert_eq!("1h".parse::<Span>().unwrap().0, Duration::from_secs(3600));
        assert_eq!(
            "7d".parse::<Span>().unwrap().0,
            Duration::from_secs(7 * 86400)
        );
        assert!("soon".parse::<Span>().is_err());
        assert_eq!(Span(Duration::from_secs(5400)).to_string(), "1h 30m");
        let s: Span = serde_yaml::from_str("90").unwrap();
        assert_eq!(s.0, Duration::from_secs(90));
    }
}
