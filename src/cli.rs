//! Command-line arguments (clap derive) and dispatch. The option names are a contract with
//! users and scripts: keep them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::build_ref::BuildRef;
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
    /// Mount a build: bkfs mount ORG/PIPELINE/NUMBER ./build (or a pasted build URL).
    Mount(MountArgs),
    /// Unmount a bkfs mount (same as `fusermount3 -u MOUNTPOINT`).
    Unmount { mountpoint: PathBuf },
    /// Mount a built-in sample build served by a local fake Buildkite (no token, no network).
    Demo {
        mountpoint: PathBuf,
        /// More logging (-v debug, -vv trace).
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// ORG/PIPELINE/NUMBER, or https://buildkite.com/ORG/PIPELINE/builds/NUMBER[#job-id].
    pub build: String,
    pub mountpoint: PathBuf,
    /// API root; the client appends /v2/... to it.
    #[arg(
        long,
        env = "BUILDKITE_API_URL",
        default_value = "https://api.buildkite.com"
    )]
    pub api_url: String,
    /// Read the API token from this file (otherwise from BUILDKITE_API_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Stay in the foreground and log to stderr.
    #[arg(short, long)]
    pub foreground: bool,
    /// Let `rm` delete artifacts through the API (otherwise rm fails with EROFS).
    #[arg(long)]
    pub allow_delete: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Cache directory [default: $XDG_CACHE_HOME/bkfs or ~/.cache/bkfs].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Bound of the on-disk cache (e.g. 500M, 20GiB; 0 disables it).
    #[arg(long, default_value = "10GiB", value_parser = crate::content::cache::parse_size)]
    pub cache_size: u64,
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
    let build: BuildRef = a.build.parse()?;
    check_api_url(&a.api_url, a.insecure_http)?;
    let token = read_token(&a)?;
    let cache_dir = absolute(a.cache_dir.unwrap_or_else(default_cache_dir));
    let log_file = absolute(a.log_file.unwrap_or_else(|| cache_dir.join("bkfs.log")));
    Ok(MountPlan {
        build,
        api_url: a.api_url,
        token,
        mountpoint: a.mountpoint,
        foreground: a.foreground,
        allow_delete: a.allow_delete,
        allow_other: a.allow_other,
        cache_dir,
        cache_size: a.cache_size,
        log_file,
        verbose: a.verbose,
        read_timeout: Duration::from_secs(a.read_timeout.max(1)),
    })
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Mount(a) => match plan(a) {
            Ok(p) => crate::mount::run(p),
            Err(m) => {
                eprintln!("bkfs: error: {m}");
                2
            }
        },
        Cmd::Unmount { mountpoint } => crate::mount::unmount(&mountpoint),
        Cmd::Demo {
            mountpoint,
            verbose,
        } => crate::demo::run(mountpoint, verbose),
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

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
