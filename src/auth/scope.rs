//! Token scopes (`repository:team-a/app:pull,push`, `registry:catalog:*`): parsing what a
//! client asks for and writing what a challenge asks it to get.

use std::fmt;

use crate::oci::RepoName;

use super::perms::Perms;

/// One requested scope. Unparseable scopes are dropped by [`parse_scopes`], never an error:
/// the client simply gets less than it asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>`; the actions as parsed (unknown ones dropped).
    Repository { name: RepoName, actions: Perms },
    /// `registry:catalog:*`.
    Catalog,
}

impl Scope {
    /// Parses one scope string; `None` when it is malformed or of an unknown type.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // A resource class may follow the type, as in `repository(plugin)`; berth serves images
        // and artifacts only, so only the plain type is recognised.
        match kind {
            "repository" => {
                let name: RepoName = name.parse().ok()?;
                let actions = actions
                    .split(',')
                    .map(|a| Perms::from_action(a.trim()))
                    .fold(Perms::NONE, Perms::union);
                Some(Scope::Repository { name, actions })
            }
            "registry" if name == "catalog" => Some(Scope::Catalog),
            _ => None,
        }
    }

    /// A challenge scope asking for `perms` on `name`.
    pub fn repository(name: &RepoName, perms: Perms) -> Scope {
        Scope::Repository {
            name: name.clone(),
            actions: perms,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { name, actions } => write!(f, "repository:{name}:{actions}"),
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

/// Parses scopes given as repeated parameters, each possibly holding several separated by
/// spaces (the OAuth2 form). Malformed ones are skipped.
pub fn parse_scopes<'a>(params: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
    params
        .into_iter()
        .flat_map(|p| p.split(' '))
        .filter(|s| !s.is_empty())
        .filter_map(Scope::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_and_catalog_scopes() {
        let s = Scope::parse("repository:team-a/app:pull,push").unwrap();
        assert_eq!(s.to_string(), "repository:team-a/app:pull,push");
        let Scope::Repository { actions, .. } = Scope::parse("repository:a:*").unwrap() else {
            panic!()
        };
        assert_eq!(actions, Perms::ALL);
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::Catalog));
        let Scope::Repository { actions, .. } = Scope::parse("repository:a:pull,fly").unwrap()
        else {
            panic!()
        };
        assert_eq!(actions, Perms::PULL);
    }

    #[test]
    fn malformed_scopes_are_dropped() {
        for bad in [
            "",
            "repository",
            "repository:a",
            "repository:UPPER:pull",
            "repository::pull",
            "registry:other:*",
            "volume:a:pull",
            "repository(plugin):a:pull",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad:?}");
        }
        let v = parse_scopes(["repository:a:pull repository:b:push", "junk", ""]);
        assert_eq!(v.len(), 2);
    }
}
