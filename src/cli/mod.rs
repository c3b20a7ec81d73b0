//! Command-line arguments (clap derive) and dispatch. The option names are a contract with
//! users and scripts: keep them.

pub mod docs;

use crate::joblog::LogFormat;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::build_ref::Target;
use crate::mount::MountPlan;
use crate::secret::Token;

#[derive(Debug, Parser)]
#[command(
    name = "bkfs",
    version,
    about = "Mount a Buildkite build's artifacts as a read-only filesystem"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Mount a build (ORG/PIPELINE/NUMBER or a pasted build URL) or a whole pipeline
    /// (ORG/PIPELINE or a pasted pipeline URL).
    Mount(Box<MountArgs>),
    /// Unmount a bkfs mount (same as `fusermount3 -u MOUNTPOINT`).
    Unmount {
        /// The directory a bkfs filesystem is mounted on.
        mountpoint: PathBuf,
    },
    /// List the bkfs mounts, or show what one mount's daemon is doing.
    Status {
        /// A bkfs mountpoint: show its requests, rate limit, cache, bytes and last error.
        mountpoint: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `bkfs man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// ORG/PIPELINE/NUMBER or https://buildkite.com/ORG/PIPELINE/builds/NUMBER[#job-id] for
    /// one build; ORG/PIPELINE or https://buildkite.com/ORG/PIPELINE for the pipeline's builds.
    #[arg(value_name = "BUILD_OR_PIPELINE")]
    pub target: String,
    /// An existing directory to mount on (not already a mount point).
    pub mountpoint: PathBuf,
    /// API root; the client appends /v2/... to it.
    #[arg(long, env = "BUILDKITE_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// GraphQL endpoint, used to list builds and get signed URLs in batches [default:
    /// https://graphql.buildkite.com/v1 with the default --api-url; none with another API
    /// URL, so the token only goes where you point it].
    #[arg(long, env = "BUILDKITE_GRAPHQL_URL")]
    pub graphql_url: Option<String>,
    /// Use only the REST API (one API request per artifact read).
    #[arg(long)]
    pub no_graphql: bool,
    /// Seconds between listings of a build that is still running (decimals allowed).
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub refresh: Duration,
    /// Pipeline mounts: how many recent builds the root lists (others work by number).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub builds: u64,
    /// Pipeline mounts: only builds of this branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// Pipeline mounts: how many opened builds stay listed in memory; the least recently
    /// used finished one beyond that leaves memory and is listed again when next used.
    #[arg(long, default_value_t = crate::fs::DEFAULT_RESIDENT_BUILDS as u64, value_parser = clap::value_parser!(u64).range(1..=100000))]
    pub resident_builds: u64,
    /// Pipeline mounts: seconds a build must go unused before it may leave memory (when more
    /// than --resident-builds are listed; decimals allowed, 0 for at once).
    #[arg(long, default_value = "10", value_parser = parse_secs_or_zero)]
    pub evict_after: Duration,
    /// Read the API token from this file (otherwise from BUILDKITE_API_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Stay in the foreground and log to stderr.
    #[arg(short, long)]
    pub foreground: bool,
    /// Let `rm` delete artifacts through the API (otherwise rm fails with EROFS).
    #[arg(long)]
    pub allow_delete: bool,
    /// List `NAME#` (the inside of each .zip/.jar/.tar/.tar.gz/.tgz artifact) in directory
    /// listings too, so `find` and `grep -r` search inside archives. Without it, `NAME#` is
    /// reached by name only.
    #[arg(long)]
    pub list_archives: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Cache directory [default: $XDG_CACHE_HOME/bkfs or ~/.cache/bkfs].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Bound of the on-disk cache (e.g. 500M, 20GiB; 0 disables it).
    #[arg(long, default_value = "10GiB", value_parser = crate::content::cache::parse_size)]
    pub cache_size: u64,
    /// Memory budget of the read path: requests in flight, blocks waiting for the disk cache
    /// and in-memory blocks (e.g. 64MiB). Reads wait and prefetch shrinks at the limit.
    #[arg(long, default_value = "64MiB", value_parser = crate::content::cache::parse_size)]
    pub memory_limit: u64,
    /// Log file in background mode [default: <cache dir>/bkfs.log].
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// More logging (-v debug, -vv trace); RUST_LOG works too.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Give up on a read after this many seconds of retries (then EIO).
    #[arg(long, default_value_t = 30)]
    pub read_timeout: u64,
    /// Allow a plain-http API URL that is not on localhost (the token would travel in clear).
    #[arg(long)]
    pub insecure_http: bool,
    /// No progress line on a terminal while the build is listed.
    #[arg(short, long)]
    pub quiet: bool,
    /// Job logs (<job>.log): prefix each line with its UTC time from the log's markers.
    #[arg(long, conflicts_with = "raw_logs")]
    pub log_timestamps: bool,
    /// Job logs (<job>.log): serve the bytes as stored (escape codes and markers included).
    #[arg(long)]
    pub raw_logs: bool,
    /// Do not show job logs.
    #[arg(long, conflicts_with_all = ["raw_logs", "log_timestamps"])]
    pub no_logs: bool,
}

/// The job-log format the flags ask for; `None` with --no-logs.
fn log_format(a: &MountArgs) -> Option<LogFormat> {
    if a.no_logs {
        None
    } else if a.raw_logs {
        Some(LogFormat::Raw)
    } else if a.log_timestamps {
        Some(LogFormat::Timestamps)
    } else {
        Some(LogFormat::Plain)
    }
}

pub const DEFAULT_API_URL: &str = "https://api.buildkite.com";
pub const DEFAULT_GRAPHQL_URL: &str = "https://graphql.buildkite.com/v1";

/// Seconds, decimals allowed, at least 0.1.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if !v.is_finite() || v < 0.1 {
        return Err(format!("must be at least 0.1 seconds: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A number of seconds, 0 allowed (decimals too).
fn parse_secs_or_zero(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be 0 or more seconds: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// The GraphQL endpoint to use: none with --no-graphql; --graphql-url if given (same
/// transport policy as the API URL); Buildkite's own with the default API URL; else none.
pub fn graphql_url(a: &MountArgs) -> Result<Option<String>, String> {
    if a.no_graphql {
        return Ok(None);
    }
    if let Some(g) = &a.graphql_url {
        check_api_url(g, a.insecure_http)
            .map_err(|e| format!("--graphql-url: {}", e.replace("--api-url ", "")))?;
        return Ok(Some(g.clone()));
    }
    let default_api = a.api_url.trim_end_matches('/') == DEFAULT_API_URL;
    Ok(default_api.then(|| DEFAULT_GRAPHQL_URL.to_string()))
}

pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("bkfs");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(h).join(".cache").join("bkfs");
    }
    std::env::temp_dir().join("bkfs-cache")
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// Only https, or http to this machine, may carry the token (unless explicitly allowed).
pub fn check_api_url(api_url: &str, insecure_http: bool) -> Result<(), String> {
    let u = url::Url::parse(api_url).map_err(|e| format!("invalid --api-url {api_url:?}: {e}"))?;
    match u.scheme() {
        "https" => Ok(()),
        "http" => {
            let local = matches!(u.host(), Some(url::Host::Domain("localhost")))
                || matches!(u.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                || matches!(u.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
            if local || insecure_http {
                Ok(())
            } else {
                Err(format!(
                    "refusing to send the API token over plain http to {}: use https, or pass --insecure-http",
                    u.host_str().unwrap_or("?")
                ))
            }
        }
        s => Err(format!("unsupported --api-url scheme {s:?}: use https")),
    }
}

fn read_token(a: &MountArgs) -> Result<Token, String> {
    let t = if let Some(f) = &a.token_file {
        let s = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read --token-file {}: {e}", f.display()))?;
        Token::new(s)
    } else {
        Token::new(std::env::var("BUILDKITE_API_TOKEN").unwrap_or_default())
    };
    if t.is_empty() {
        return Err(
            "no API token: set BUILDKITE_API_TOKEN or use --token-file PATH (scopes: read_artifacts, read_builds; write_artifacts for --allow-delete)".into(),
        );
    }
    Ok(t)
}

fn plan(a: MountArgs) -> Result<MountPlan, String> {
    let logs = log_format(&a);
    let target: Target = a.target.parse()?;
    check_api_url(&a.api_url, a.insecure_http)?;
    let graphql_url = graphql_url(&a)?;
    // Local problems first, then credentials; the network comes last (in mount::run).
    crate::mount::check_mountpoint(&a.mountpoint)?;
    let token = read_token(&a)?;
    let cache_dir = absolute(a.cache_dir.unwrap_or_else(default_cache_dir));
    let log_file = absolute(a.log_file.unwrap_or_else(|| cache_dir.join("bkfs.log")));
    Ok(MountPlan {
        target,
        api_url: a.api_url,
        graphql_url,
        refresh: a.refresh,
        builds: a.builds as usize,
        branch: a.branch,
        resident_builds: a.resident_builds as usize,
        evict_after: a.evict_after,
        token,
        mountpoint: a.mountpoint,
        foreground: a.foreground,
        allow_delete: a.allow_delete,
        list_archives: a.list_archives,
        allow_other: a.allow_other,
        cache_dir,
        cache_size: a.cache_size,
        memory_limit: a.memory_limit,
        log_file,
        verbose: a.verbose,
        read_timeout: Duration::from_secs(a.read_timeout.max(1)),
        log_format: logs,
        progress: !a.quiet && crate::progress::stderr_is_tty(),
    })
}

pub fn main() -> i32 {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = if crate::mount_opts::is_helper_call(&argv, &docs::subcommand_names()) {
        match crate::mount_opts::helper_args(&argv[1..], &docs::mount_longs()) {
            Ok(crate::mount_opts::Helper::Mount(args)) => match Cli::try_parse_from(args) {
                Ok(c) => c,
                Err(e) => {
                    let msg = e.render().to_string();
                    let first = msg.lines().next().unwrap_or("invalid options");
                    eprintln!("bkfs: error: -o: {}", first.trim_start_matches("error: "));
                    return 2;
                }
            },
            Ok(crate::mount_opts::Helper::Fake) => return 0,
            Err(m) => {
                eprintln!("bkfs: error: {m}");
                return 2;
            }
        }
    } else {
        Cli::parse()
    };
    match cli.cmd {
        Cmd::Mount(a) => match plan(*a) {
            Ok(p) => crate::mount::run(p),
            Err(m) => {
                eprintln!("bkfs: error: {m}");
                2
            }
        },
        Cmd::Unmount { mountpoint } => crate::mount::unmount(&mountpoint),
        Cmd::Status { mountpoint } => crate::status::run(mountpoint.as_deref()),
        Cmd::Completions { shell } => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&docs::completions(shell));
            0
        }
        Cmd::Man => {
            print!("{}", docs::man_page());
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_policy() {
        assert!(check_api_url("https://api.buildkite.com", false).is_ok());
        assert!(check_api_url("http://127.0.0.1:8080", false).is_ok());
        assert!(check_api_url("http://localhost:1", false).is_ok());
        assert!(check_api_url("http://[::1]:1", false).is_ok());
        assert!(check_api_url("http://api.example.com", false).is_err());
        assert!(check_api_url("http://api.example.com", true).is_ok());
        assert!(check_api_url("ftp://x", true).is_err());
    }

    fn args(extra: &[&str]) -> MountArgs {
        let mut v = vec!["bkfs", "mount", "acme/web/1", "/tmp/x"];
        v.extend_from_slice(extra);
        match Cli::try_parse_from(v).unwrap().cmd {
            Cmd::Mount(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn graphql_endpoint_policy() {
        // Buildkite's own endpoint only with Buildkite's own API.
        let a = args(&["--api-url", "https://api.buildkite.com/"]);
        assert_eq!(
            graphql_url(&a).unwrap().as_deref(),
            Some(DEFAULT_GRAPHQL_URL)
        );
        let a = args(&["--api-url", "http://127.0.0.1:9"]);
        assert_eq!(graphql_url(&a).unwrap(), None);
        let a = args(&[
            "--api-url",
            "http://127.0.0.1:9",
            "--graphql-url",
            "http://127.0.0.1:9/graphql",
        ]);
        assert_eq!(
            graphql_url(&a).unwrap().as_deref(),
            Some("http://127.0.0.1:9/graphql")
        );
        let a = args(&["--graphql-url", "http://127.0.0.1:9/g", "--no-graphql"]);
        assert_eq!(graphql_url(&a).unwrap(), None);
        let a = args(&["--graphql-url", "http://graphql.example.com/v1"]);
        assert!(graphql_url(&a).unwrap_err().contains("--graphql-url"));
    }

    #[test]
    fn refresh_and_builds() {
        assert_eq!(args(&[]).refresh, Duration::from_secs(10));
        assert_eq!(
            args(&["--refresh", "0.5"]).refresh,
            Duration::from_millis(500)
        );
        assert!(parse_secs("0").is_err() && parse_secs("x").is_err());
        assert_eq!(args(&[]).builds, 50);
        let bad = Cli::try_parse_from(["bkfs", "mount", "a/b", "/m", "--builds", "0"]);
        assert!(bad.is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
