//! Logging setup. `-v` raises bkfs's own level (info → debug → trace); `RUST_LOG` may set
//! anything else. The HTTP stack's own logs are capped at `info` whatever is asked, because at
//! debug/trace they print request headers, and the `Authorization` header holds the token.

use tracing_subscriber::EnvFilter;

pub fn init(verbose: u8, file: Option<std::fs::File>) {
    let own = match verbose {
        0 => "bkfs=info",
        1 => "bkfs=debug",
        _ => "bkfs=trace",
    };
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("warn,{own}"));
    let mut filter = EnvFilter::try_new(&base).unwrap_or_else(|_| EnvFilter::new(own));
    for d in [
        "hyper=info",
        "hyper_util=info",
        "reqwest=info",
        "h2=info",
        "rustls=info",
    ] {
        filter = filter.add_directive(d.parse().expect("static directive"));
    }
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match file {
        Some(f) => b
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => b.with_writer(std::io::stderr).try_init(),
    };
}
