//! Immutable tags: rules of a repository glob and a tag glob. A tag a rule covers may be
//! created, and pushed again with the same digest, but never moved to another digest nor
//! deleted, and the manifest it points at is not deleted while it does. The checks that a
//! concurrent push could race run inside the metadata store's transaction (`fixed` tags in
//! `Metadata::put_manifest`, `keep` in `Metadata::delete_manifest`).

use std::fmt;

/// A glob over names: `*` matches within one path segment, `**` across segments, `?` one
/// character other than `/`; anything else matches itself. `prod/**` matches `prod/a` and
/// `prod/a/b`, not `prod`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    One,
    Star,
    DoubleStar,
}

impl Glob {
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty pattern".into());
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    if chars.peek() == Some(&'*') {
                        return Err(format!("{text:?}: `***` is not a pattern"));
                    }
                    Token::DoubleStar
                }
                '*' => Token::Star,
                '?' => Token::One,
                c => Token::Char(c),
            });
        }
        Ok(Glob {
            text: text.to_string(),
            tokens,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (m, n) = (self.tokens.len(), name.len());
        // ok[j]: the tokens from i on match name[j..]; computed from the last token back.
        let mut next = vec![false; n + 1];
        next[n] = true;
        for i in (0..m).rev() {
            let mut ok = vec![false; n + 1];
            for j in (0..=n).rev() {
                ok[j] = match self.tokens[i] {
                    Token::Char(c) => j < n && name[j] == c && next[j + 1],
                    Token::One => j < n && name[j] != '/' && next[j + 1],
                    Token::Star => next[j] || (j < n && name[j] != '/' && ok[j + 1]),
                    Token::DoubleStar => next[j] || (j < n && ok[j + 1]),
                };
            }
            next = ok;
        }
        next[0]
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One rule: tags matching `tags` in repositories matching `repositories` are immutable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub repositories: Glob,
    pub tags: Glob,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "immutable_tags rule repositories {:?} tags {:?}",
            self.repositories.text, self.tags.text
        )
    }
}

/// The configured rules, first match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImmutableTags {
    rules: Vec<Rule>,
}

impl ImmutableTags {
    pub fn new(rules: Vec<Rule>) -> Self {
        ImmutableTags { rules }
    }

    /// The rule that makes `tag` of `repo` immutable, if any.
    pub fn rule(&self, repo: &str, tag: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.repositories.matches(repo) && r.tags.matches(tag))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, name: &str) -> bool {
        Glob::parse(p).unwrap().matches(name)
    }

    #[test]
    fn globs_follow_path_segments() {
        assert!(m("prod/**", "prod/a"));
        assert!(m("prod/**", "prod/a/b"));
        assert!(!m("prod/**", "prod"));
        assert!(!m("prod/**", "production/a"));
        assert!(m("prod/*", "prod/a"));
        assert!(!m("prod/*", "prod/a/b"));
        assert!(m("**", "a/b/c"));
        assert!(m("*/app", "team/app"));
        assert!(!m("*/app", "org/team/app"));
        assert!(m("**/app", "org/team/app"));
        assert!(m("v*", "v1.2.3"));
        assert!(!m("v*", "latest"));
        assert!(m("v?", "v1"));
        assert!(!m("v?", "v10"));
        assert!(m("latest", "latest"));
        assert!(!m("latest", "latest2"));
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("a/***").is_err());
    }

    #[test]
    fn the_first_matching_rule_names_itself() {
        let rules = ImmutableTags::new(vec![Rule {
            repositories: Glob::parse("prod/**").unwrap(),
            tags: Glob::parse("v*").unwrap(),
        }]);
        let r = rules.rule("prod/api", "v1").unwrap();
        assert_eq!(
            r.to_string(),
            "immutable_tags rule repositories \"prod/**\" tags \"v*\""
        );
        assert!(rules.rule("prod/api", "latest").is_none());
        assert!(rules.rule("dev/api", "v1").is_none());
    }
}
