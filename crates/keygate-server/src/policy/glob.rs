//! Path globs: `/api/*/orders/**`. A glob is a list of segments, each a literal, `*` (exactly
//! one segment, not empty) or `**` (any number of segments, none included, so `/public/**`
//! matches `/public`, `/public/` and everything below). A `*` inside a segment (`*.png`) is
//! refused at load time rather than given a meaning nobody wrote down.
//!
//! Globs are written on normalized paths, so a glob must itself be normalized: no dot
//! segments, no repeated slashes, no escapes; a glob that could never match is an error.

use super::path::NormalizedPath;

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    One,
    Any,
}

impl Glob {
    /// Parses a glob, or says why it is not one.
    pub(crate) fn parse(text: &str) -> Result<Glob, String> {
        if !text.starts_with('/') {
            return Err(format!("{text:?} must start with '/'"));
        }
        let segments = text[1..]
            .split('/')
            .map(|seg| match seg {
                "**" => Ok(Segment::Any),
                "*" => Ok(Segment::One),
                _ if seg.contains('*') => {
                    Err(format!("{text:?}: '*' and '**' must be whole segments"))
                }
                _ => Ok(Segment::Literal(seg.into())),
            })
            .collect::<Result<Box<[_]>, _>>()?;
        // The literal parts must survive normalization unchanged, or the glob could never
        // match a normalized path (`/a/../b`, `//a`, `/a%2Fb`, `/a;b`).
        let literal: String = text.replace("**", "x").replace('*', "x");
        match NormalizedPath::new(literal.as_bytes()) {
            Ok(p) if p.as_str() == literal && !literal.contains('?') && !literal.contains('%') => {
                Ok(Glob { segments })
            }
            _ => Err(format!(
                "{text:?} is not a normalized path: no '.' or '..' segments, repeated slashes, \
                 escapes, '?', ';' or segments ending in '.'"
            )),
        }
    }

    /// Whether the glob matches `path`'s segments.
    pub(crate) fn matches(&self, path: &[&str]) -> bool {
        // Iterative wildcard matching with one backtrack point (the last `**`): linear in
        // practice, never exponential.
        let pat = &self.segments;
        let (mut p, mut s) = (0, 0);
        let mut backtrack: Option<(usize, usize)> = None;
        while s < path.len() {
            match pat.get(p) {
                Some(Segment::Any) => {
                    backtrack = Some((p, s));
                    p += 1;
                    continue;
                }
                Some(Segment::One) if !path[s].is_empty() => {
                    p += 1;
                    s += 1;
                    continue;
                }
                Some(Segment::Literal(l)) if **l == *path[s] => {
                    p += 1;
                    s += 1;
                    continue;
                }
                _ => {}
            }
            match backtrack {
                Some((bp, bs)) => {
                    // Let the last `**` swallow one more segment.
                    backtrack = Some((bp, bs + 1));
                    p = bp + 1;
                    s = bs + 1;
                }
                None => return false,
            }
        }
        pat[p..].iter().all(|seg| *seg == Segment::Any)
    }

    /// The first segment, when it is a literal: a cheap filter before the full match.
    pub(crate) fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(l)) => Some(l),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        let g = Glob::parse(glob).unwrap();
        let p = NormalizedPath::new(path.as_bytes()).unwrap();
        let segs: Vec<&str> = p.segments().collect();
        g.matches(&segs)
    }

    #[test]
    fn glob_table() {
        let cases = [
            ("/public/**", "/public", true),
            ("/public/**", "/public/", true),
            ("/public/**", "/public/a/b/c", true),
            ("/public/**", "/publicx", false),
            ("/public/**", "/pub", false),
            ("/public/**", "/", false),
            ("/a/*", "/a/b", true),
            ("/a/*", "/a/", false),
            ("/a/*", "/a", false),
            ("/a/*", "/a/b/c", false),
            ("/a/*/c", "/a/b/c", true),
            ("/a/*/c", "/a/c", false),
            ("/a/**/c", "/a/c", true),
            ("/a/**/c", "/a/x/y/c", true),
            ("/a/**/c", "/a/x/y/c/d", false),
            ("/a/**/c/**", "/a/c/c/c", true),
            ("/**/admin", "/x/y/admin", true),
            ("/**/admin", "/admin", true),
            ("/**/admin", "/admin/x", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/", "/", true),
            ("/", "/a", false),
            ("/a/b", "/a/b", true),
            ("/a/b", "/a/b/", false),
            ("/a/b/", "/a/b/", true),
            ("/Admin/**", "/admin", false),
            ("/café/*", "/caf%C3%A9/x", true),
            ("/**/**/z", "/z", true),
            ("/*/**", "/", false),
            ("/*/**", "/x", true),
        ];
        for (glob, path, want) in cases {
            assert_eq!(m(glob, path), want, "{glob} on {path}");
        }
    }

    #[test]
    fn bad_globs_are_refused() {
        for bad in [
            "public/**",
            "/a/*.png",
            "/a/b**",
            "/a/../b",
            "/a/./b",
            "//a",
            "/a%2Fb",
            "/a;b",
            "/a?b",
            "/a.",
            "",
        ] {
            assert!(Glob::parse(bad).is_err(), "{bad}");
        }
    }
}
