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

/// One pipeline: what `bkfs mount ORG/PIPELINE` mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRef {
    pub org: String,
    pub pipeline: String,
}

impl fmt::Display for PipelineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.pipeline)
    }
}

impl PipelineRef {
    /// Build `number` of this pipeline.
    pub fn build(&self, number: u64) -> BuildRef {
        BuildRef {
            org: self.org.clone(),
            pipeline: self.pipeline.clone(),
            number,
        }
    }
}

impl BuildRef {
    pub fn pipeline_ref(&self) -> PipelineRef {
        PipelineRef {
            org: self.org.clone(),
            pipeline: self.pipeline.clone(),
        }
    }
}

/// What the user asked to mount: one build, or a whole pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Build(BuildRef),
    Pipeline(PipelineRef),
}

impl Target {
    pub fn pipeline_ref(&self) -> PipelineRef {
        match self {
            Target::Build(b) => b.pipeline_ref(),
            Target::Pipeline(p) => p.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Build(b) => b.fmt(f),
            Target::Pipeline(p) => p.fmt(f),
        }
    }
}

const TARGET_HELP: &str = "expected ORG/PIPELINE/NUMBER, ORG/PIPELINE, or a pasted https://buildkite.com/ORG/PIPELINE[/builds/NUMBER] URL";

impl std::str::FromStr for Target {
    type Err = String;

    /// `ORG/PIPELINE/NUMBER` or a build URL → a build; `ORG/PIPELINE` or a pipeline URL
    /// (`https://buildkite.com/ORG/PIPELINE`, also with `/builds`, a query or a trailing
    /// slash) → the pipeline.
    fn from_str(input: &str) -> Result<Self, String> {
        let s = input.trim();
        let path = match strip_web_prefix(s) {
            Some(rest) => {
                let rest = rest.split(['#', '?']).next().unwrap_or("");
                let rest = rest.trim_end_matches('/');
                rest.strip_suffix("/builds").unwrap_or(rest).to_string()
            }
            None => s.to_string(),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if let [org, pipeline] = parts.as_slice() {
            if !valid_slug(org) || !valid_slug(pipeline) {
                return Err(format!(
                    "invalid organization or pipeline slug in {input:?} ({TARGET_HELP})"
                ));
            }
            return Ok(Target::Pipeline(PipelineRef {
                org: org.to_string(),
                pipeline: pipeline.to_string(),
            }));
        }
        s.parse::<BuildRef>()
            .map(Target::Build)
            .map_err(|e| format!("{e}; or ORG/PIPELINE for a whole pipeline"))
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
    fn targets() {
        let t = |s: &str| s.parse::<Target>().unwrap_or_else(|e| panic!("{s}: {e}"));
        for s in [
            "acme/web",
            " acme/web ",
            "https://buildkite.com/acme/web",
            "https://buildkite.com/acme/web/",
            "https://buildkite.com/acme/web/builds",
            "https://buildkite.com/acme/web?branch=main",
        ] {
            assert_eq!(
                t(s),
                Target::Pipeline(PipelineRef {
                    org: "acme".into(),
                    pipeline: "web".into()
                }),
                "{s}"
            );
        }
        assert_eq!(t("acme/web/7"), Target::Build(ok("acme/web/7")));
        assert_eq!(
            t("https://buildkite.com/acme/web/builds/7#x"),
            Target::Build(ok("acme/web/7"))
        );
        assert_eq!(t("acme/web").to_string(), "acme/web");
        for bad in [
            "",
            "acme",
            "acme/",
            "acme/w b",
            "../web",
            "acme/web/0",
            "a/b/c/d",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} should be rejected");
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
