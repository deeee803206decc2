//! Where metadata lives: the embedded SQLite file in the data dir (the default), or a
//! PostgreSQL database shared by every replica.
//!
//! ```yaml
//! database: postgres://berth@127.0.0.1:5432/berth
//! # or
//! database: {url: postgres://berth@127.0.0.1:5432/berth, max_connections: 16}
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Connections a replica opens to PostgreSQL unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// `<data_dir>/berth.db`.
    #[default]
    Embedded,
    Postgres {
        url: String,
        max_connections: u32,
    },
}

#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum Raw {
    Url(String),
    Full {
        url: String,
        #[serde(default)]
        max_connections: Option<u32>,
    },
}

impl DatabaseConfig {
    fn from_raw(raw: Raw) -> Result<Self, String> {
        let (url, max) = match raw {
            Raw::Url(u) => (u, None),
            Raw::Full {
                url,
                max_connections,
            } => (url, max_connections),
        };
        if url == "sqlite" || url == "embedded" {
            return Ok(DatabaseConfig::Embedded);
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "database: expected `sqlite` or a postgres:// URL, got {:?}",
                redact(&url)
            ));
        }
        let max_connections = max.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err("database.max_connections must be at least 1".into());
        }
        Ok(DatabaseConfig::Postgres {
            url,
            max_connections,
        })
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, DatabaseConfig::Postgres { .. })
    }
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl<'de> Deserialize<'de> for DatabaseConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "database: expected `sqlite`, a postgres:// URL, or {url, max_connections}",
            )
        })?;
        DatabaseConfig::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for DatabaseConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DatabaseConfig::Embedded => s.serialize_str("sqlite"),
            DatabaseConfig::Postgres {
                url,
                max_connections,
            } => Raw::Full {
                url: url.clone(),
                max_connections: Some(*max_connections),
            }
            .serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<DatabaseConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn url_or_block() {
        assert_eq!(parse("sqlite").unwrap(), DatabaseConfig::Embedded);
        assert_eq!(
            parse("postgres://berth@127.0.0.1:5432/berth").unwrap(),
            DatabaseConfig::Postgres {
                url: "postgres://berth@127.0.0.1:5432/berth".into(),
                max_connections: DEFAULT_MAX_CONNECTIONS
            }
        );
        assert_eq!(
            parse("{url: 'postgresql://a:b@h/db', max_connections: 4}").unwrap(),
            DatabaseConfig::Postgres {
                url: "postgresql://a:b@h/db".into(),
                max_connections: 4
            }
        );
        let e = parse("mysql://x:secret@h/db").unwrap_err();
        assert!(e.contains("postgres://") && !e.contains("secret"), "{e}");
        assert!(parse("{url: 'postgres://h/db', max_connections: 0}").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact("postgres://h/d"), "postgres://h/d");
    }
}
