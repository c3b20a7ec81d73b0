//! Parsing what the user typed to name a build: `ORG/PIPELINE/NUMBER` or a pasted web URL
//! `https://buildkite.com/ORG/PIPELINE/builds/NUMBER` (optionally with `#job-id`, a query
//! string, or a trailing slash). Pure, no I/O.

use std::fmt;

/// One build of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRef {
    pub org: String,
    pub pipeline: String,
    pub number: u64,
}

impl fmt::Display for BuildRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.org, self.pipeline, self.number)
    }
}

/// Slugs are what Buildkite allows in org and pipeline names: letters, digits, `-`, `_`, `.`.
fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

const HELP: &str =
    "expected ORG/PIPELINE/NUMBER or https://buildkite.com/ORG/PIPELINE/builds/NUMBER";

impl std::str::FromStr for BuildRef {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, String> {
        let s = input.trim();
        let (org, pipeline, number) = if let Some(rest) = strip_web_prefix(s) {
            // Drop the fragment (#job-id) and query, then a trailing slash.
            let rest = rest.split(['#', '?']).next().unwrap_or("");
            let rest = rest.trim_end_matches('/');
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                [org, pipeline, "builds", number] => (*org, *pipeline, *number),
                _ => return Err(format!("not a build URL: {input:?} ({HELP})")),
            }
        } else {
            let parts: Vec<&str> = s.split('/').collect();
            match parts.as_slice() {
                [org, pipeline, number] => (*org, *pipeline, *number),
                _ => return Err(format!("not a build reference: {input:?} ({HELP})")),
            }
        };
        if !valid_slug(org) || !valid_slug(pipeline) {
            return Err(format!(
                "invalid organization or pipeline slug in {input:?} ({HELP})"
            ));
        }
        let number: u64 = number
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid build number {number:?} in {input:?} ({HELP})"))?;
        Ok(BuildRef {
            org: org.to_string(),
            pipeline: pipeline.to_string(),
            number,
        })
    }
}

fn strip_web_prefix(s: &str) -> Option<&str> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))?;
    rest.strip_prefix("buildkite.com/")
        .or_else(|| rest.strip_prefix("www.buildkite.com/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> BuildRef {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn short_form() {
        assert_eq!(
            ok("acme/web-app/123"),
            BuildRef {
                org: "acme".into(),
                pipeline: "web-app".into(),
                number: 123
            }
        );
        assert_eq!(ok("  my_org/p.x/7 ").to_string(), "my_org/p.x/7");
    }

    #[test]
    fn urls() {
        let want = "acme/web/42";
        for u in [
            "https://buildkite.com/acme/web/builds/42",
            "https://buildkite.com/acme/web/builds/42/",
            "https://buildkite.com/acme/web/builds/42#0190a0b1-aaaa-bbbb-cccc-123456789012",
            "https://buildkite.com/acme/web/builds/42?tab=artifacts",
            "http://www.buildkite.com/acme/web/builds/42",
        ] {
            assert_eq!(ok(u).to_string(), want, "{u}");
        }
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "acme/web",
            "acme/web/0",
            "acme/web/x",
            "acme/web/-1",
            "acme//1",
            "a/b/c/1",
            "../web/1",
            "acme/w b/1",
            "https://buildkite.com/acme/web/42",
            "https://example.com/acme/web/builds/42",
            "https://buildkite.com/acme/web/builds/",
        ] {
            assert!(
                bad.parse::<BuildRef>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
