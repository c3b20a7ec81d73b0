//! The sample build served by `bkfs-demo`: a realistic Rails-ish pipeline with parallel,
//! retried, artifact-less and still-uploading jobs, text logs, JUnit XML, coverage HTML, PNG
//! screenshots (also as a `.zip`) and a real `.tar.gz`, a few MiB in all. Everything is generated from fixed
//! seeds (the PNGs and the tarball use stored, uncompressed deflate blocks), so the tree is
//! identical on every run and nothing is read from disk.

use std::fmt::Write as _;

use crate::model::Job;

use super::world::FakeBuild;

/// The token `bkfs-demo` registers.
pub const DEMO_TOKEN: &str = "demo-token";

const ORG: &str = "demo";
const PIPELINE: &str = "webapp";
const NUMBER: u64 = 42;

/// The sample build: org "demo", pipeline "webapp", number 42.
pub fn demo_build() -> FakeBuild {
    let mut fb = FakeBuild::new(ORG, PIPELINE, NUMBER);
    fb.build.state = Some("failed".into());
    fb.build.message = Some("Speed up checkout page and fix flaky cart spec".into());
    fb.build.branch = Some("main".into());
    fb.build.commit = Some("3f9c2a7d41b8e06c5a2d9e1f7b4c8a0d2e6f1a3b".into());
    fb.build.created_at = Some("2026-01-02T03:04:05.000Z".into());
    fb.build.started_at = Some("2026-01-02T03:04:09.000Z".into());
    fb.build.finished_at = Some("2026-01-02T03:21:40.000Z".into());
    let mut rng = Rng(0x5eed_0042);

    // Pipeline upload: a job without artifacts.
    job(
        &mut fb,
        Some(":pipeline: Upload pipeline"),
        "passed",
        "03:04:31",
        |_| {},
    );

    // Lint.
    let lint = job(&mut fb, Some(":eslint: Lint"), "passed", "03:06:02", |j| {
        j.step_key = Some("lint".into());
    });
    fb.add_artifact(&lint, "log/eslint.log", eslint_log(&mut rng));
    fb.add_artifact(&lint, "junit.xml", junit(&mut rng, "eslint", 40, 0));

    // A wait step: no name, not a command job.
    let wait = fb.next_id();
    fb.push_job(Job {
        id: wait,
        kind: Some("waiter".into()),
        state: Some("passed".into()),
        ..Default::default()
    });

    // RSpec, 3-way parallel; the second shard fails.
    for i in 0..3u32 {
        let failures = if i == 1 { 2 } else { 0 };
        let id = job(
            &mut fb,
            Some(":rspec: RSpec"),
            if failures > 0 { "failed" } else { "passed" },
            ["03:12:47", "03:13:30", "03:12:05"][i as usize],
            |j| {
                j.step_key = Some("rspec".into());
                j.parallel_group_index = Some(i);
                j.parallel_group_total = Some(3);
            },
        );
        fb.add_artifact(&id, "log/rspec.log", rspec_log(&mut rng, i, failures));
        fb.add_artifact(&id, "junit.xml", junit(&mut rng, "rspec", 120, failures));
        fb.add_artifact(&id, "coverage/lcov.info", lcov(&mut rng));
        fb.add_artifact(
            &id,
            "coverage/lcov-report/index.html",
            coverage_index(&mut rng),
        );
        for model in ["user", "order", "cart"] {
            fb.add_artifact(
                &id,
                &format!("coverage/lcov-report/app/models/{model}.rb.html"),
                coverage_page(&mut rng, model),
            );
        }
        if failures > 0 {
            for shot in ["cart_spec_adds_item", "cart_spec_applies_coupon"] {
                fb.add_artifact(
                    &id,
                    &format!("tmp/screenshots/{shot}.png"),
                    png(&mut rng, 320, 200),
                );
            }
        }
    }

    // Docker image.
    let docker = job(
        &mut fb,
        Some(":docker: Build image"),
        "passed",
        "03:15:12",
        |j| {
            j.step_key = Some("docker".into());
        },
    );
    fb.add_artifact(&docker, "log/docker-build.log", docker_log(&mut rng));
    fb.add_artifact(&docker, "dist/webapp.tar.gz", tarball(&mut rng));
    fb.add_artifact(
        &docker,
        "dist/image-digest.txt",
        "sha256:9b2f7c1e4a8d3f6b0c5e2a7d9f1b4c8e3a6d0f2b5c9e1a4d7f0b3c6e9a2d5f8b\n",
    );

    // Cucumber, failed once and retried.
    let first = fb.next_id();
    fb.push_job(cucumber_job(&fb, &first, "failed", "03:18:44"));
    let second = fb.next_id();
    fb.push_job(cucumber_job(&fb, &second, "passed", "03:21:33"));
    if let Some(j) = fb.build.jobs.iter_mut().find(|j| j.id == first) {
        j.retried = Some(true);
        j.retried_in_job_id = Some(second.clone());
    }
    fb.add_artifact(&first, "log/cucumber.log", cucumber_log(&mut rng, true));
    fb.add_artifact(&first, "junit.xml", junit(&mut rng, "cucumber", 30, 1));
    fb.add_artifact(
        &first,
        "tmp/screenshots/checkout_fails.png",
        png(&mut rng, 320, 200),
    );
    let shots: Vec<(String, Vec<u8>)> = (1..=3)
        .map(|n| (format!("checkout/step-{n}.png"), png(&mut rng, 160, 100)))
        .chain(std::iter::once((
            "index.html".to_string(),
            b"<html><body><h1>Checkout</h1><img src=\"checkout/step-3.png\"></body></html>\n"
                .to_vec(),
        )))
        .collect();
    fb.add_artifact(&first, "tmp/screenshots.zip", zip_stored(&shots));
    fb.add_artifact(&second, "log/cucumber.log", cucumber_log(&mut rng, false));
    fb.add_artifact(&second, "junit.xml", junit(&mut rng, "cucumber", 30, 0));

    // A package job whose only artifact never finished uploading.
    let pkg = job(
        &mut fb,
        Some(":package: Package"),
        "passed",
        "03:16:20",
        |_| {},
    );
    fb.add_artifact_with(
        &pkg,
        "pkg/webapp_1.4.2_amd64.deb",
        rng.bytes(64 * 1024),
        |a| {
            a.state = Some("new".into());
        },
    );
    add_logs(&mut fb);
    fb
}

/// A console log for every command job, what its agent would have streamed: markers,
/// colours, progress bars, group headers, and a few lines that say what the job did.
fn add_logs(fb: &mut FakeBuild) {
    let jobs: Vec<(String, String, String, bool)> = fb
        .build
        .jobs
        .iter()
        .filter(|j| j.kind.as_deref() == Some("script"))
        .map(|j| {
            let label = j.name.clone().unwrap_or_default();
            let key = j.step_key.clone().unwrap_or_default();
            let failed = j.state.as_deref() == Some("failed");
            let shard = j.parallel_group_index.map(|i| i + 1).unwrap_or(0);
            (j.id.clone(), label, format!("{key}{shard}"), failed)
        })
        .collect();
    for (n, (id, label, key, failed)) in jobs.into_iter().enumerate() {
        let mut body: Vec<String> = match key.as_str() {
            "lint0" => vec![
                "$ npx eslint src/ --format junit --output-file junit.xml".into(),
                "40 files checked, 0 problems".into(),
            ],
            k if k.starts_with("rspec") => vec![
                format!("$ bundle exec rspec --seed 4242 --shard {}", &k[5..]),
                "Randomized with seed 4242".into(),
                "120 examples, see junit.xml".into(),
            ],
            "docker0" => vec![
                "$ docker build -t webapp:1.4.2 .".into(),
                "Step 1/9 : FROM ruby:3.3-slim".into(),
                "Successfully tagged webapp:1.4.2".into(),
            ],
            "cucumber0" => vec!["$ bundle exec cucumber --format junit".into()],
            _ if label.contains("Upload pipeline") => vec![
                "$ buildkite-agent pipeline upload .buildkite/pipeline.yml".into(),
                "Pipeline upload complete: 7 steps".into(),
            ],
            _ => vec![
                "$ make package".into(),
                "dpkg-deb: building package 'webapp'".into(),
            ],
        };
        if failed {
            body.push("ERROR: 2 examples FAILED".into());
            body.push(
                "Gem::RemoteFetcher::FetchError: bad response Service Unavailable 503".into(),
            );
            body.push("FAILED".into());
        } else {
            body.push("OK: all checks passed".into());
        }
        let lines: Vec<&str> = body.iter().map(String::as_str).collect();
        let start = 1_767_323_060_000 + n as u64 * 60_000;
        let log = super::fakelog::generate(&slug(&label), &lines, start);
        fb.logs.insert(id, log.raw.into());
    }
}

/// Pushes a command job finished at `03:..` on the build's day.
fn job(
    fb: &mut FakeBuild,
    label: Option<&str>,
    state: &str,
    finished: &str,
    edit: impl FnOnce(&mut Job),
) -> String {
    let id = fb.next_id();
    let mut j = Job {
        id: id.clone(),
        kind: Some("script".into()),
        name: label.map(str::to_string),
        state: Some(state.into()),
        retried: Some(false),
        created_at: Some("2026-01-02T03:04:05.000Z".into()),
        started_at: Some("2026-01-02T03:04:20.000Z".into()),
        finished_at: Some(format!("2026-01-02T{finished}.000Z")),
        web_url: Some(fb.job_web_url(&id)),
        ..Default::default()
    };
    edit(&mut j);
    fb.push_job(j);
    id
}

fn cucumber_job(fb: &FakeBuild, id: &str, state: &str, finished: &str) -> Job {
    Job {
        id: id.to_string(),
        kind: Some("script".into()),
        name: Some(":cucumber: Cucumber".into()),
        step_key: Some("cucumber".into()),
        state: Some(state.into()),
        retried: Some(false),
        created_at: Some("2026-01-02T03:04:05.000Z".into()),
        started_at: Some("2026-01-02T03:13:40.000Z".into()),
        finished_at: Some(format!("2026-01-02T{finished}.000Z")),
        web_url: Some(fb.job_web_url(id)),
        ..Default::default()
    }
}

/// splitmix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

const MODELS: &[&str] = &[
    "User", "Order", "Cart", "Invoice", "Coupon", "Product", "Address",
];
const VERBS: &[&str] = &[
    "returns the full name",
    "validates presence of email",
    "computes the total with tax",
    "applies a percentage coupon",
    "rejects an expired coupon",
    "serializes to JSON",
    "sends a confirmation email",
    "is invalid without a product",
    "rounds amounts to cents",
    "orders items by position",
];

/// Log timestamps that only move forward, from 03:05:00 on the build's day.
struct Clock(u64);

impl Clock {
    /// Advances by up to `max_ms` and formats the new time.
    fn tick(&mut self, rng: &mut Rng, max_ms: u64) -> String {
        self.0 += 1 + rng.below(max_ms);
        let ms = 5 * 60_000 + self.0;
        format!(
            "2026-01-02 03:{:02}:{:02}.{:03}",
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }
}

fn rspec_log(rng: &mut Rng, shard: u32, failures: usize) -> String {
    let mut s = String::new();
    let mut clock = Clock(0);
    let seed = rng.below(65536);
    let _ = writeln!(
        s,
        "{} INFO  Running RSpec shard {} of 3",
        clock.tick(rng, 500),
        shard + 1
    );
    let _ = writeln!(
        s,
        "{} INFO  Randomized with seed {seed}",
        clock.tick(rng, 500)
    );
    let mut failed = 0;
    for n in 0..1800u64 {
        let model = rng.pick(MODELS);
        let verb = rng.pick(VERBS);
        let ms = rng.below(900) + 3;
        if failed < failures && n % 700 == 350 {
            failed += 1;
            let _ = writeln!(
                s,
                "{} ERROR {model}#{verb} FAILED - {failed}",
                clock.tick(rng, 500)
            );
            let _ = writeln!(s, "    Failure/Error: expect(cart.items.count).to eq(2)");
            let _ = writeln!(s, "      expected: 2\n           got: 1");
            let _ = writeln!(
                s,
                "    # ./spec/models/cart_spec.rb:{}:in `block (3 levels) in <top (required)>'",
                20 + failed * 17
            );
        } else if n % 97 == 13 {
            let _ = writeln!(
                s,
                "{} WARN  {model}: slow example ({ms}ms) {verb}",
                clock.tick(rng, 500)
            );
        } else {
            let _ = writeln!(
                s,
                "{} INFO  {model} {verb} ({ms}ms) passed",
                clock.tick(rng, 500)
            );
        }
    }
    let _ = writeln!(
        s,
        "\nFinished in 7 minutes 41 seconds (files took 4.2 seconds to load)"
    );
    let _ = writeln!(s, "1800 examples, {failures} failures");
    if failures > 0 {
        let _ = writeln!(s, "\nFailed examples:\n");
        for f in 0..failures {
            let _ = writeln!(
                s,
                "rspec ./spec/models/cart_spec.rb:{} # Cart FAILED example {}",
                37 + f * 17,
                f + 1
            );
        }
    }
    s
}

fn junit(rng: &mut Rng, suite: &str, tests: usize, failures: usize) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{}.{:03}\" timestamp=\"2026-01-02T03:05:00Z\">",
        rng.below(500) + 20,
        rng.below(1000)
    );
    for n in 0..tests {
        let model = rng.pick(MODELS);
        let verb = rng.pick(VERBS);
        let file = format!("spec/models/{}_spec.rb", model.to_lowercase());
        let time = format!("{}.{:04}", rng.below(3), rng.below(10000));
        let _ = write!(
            s,
            "  <testcase classname=\"{suite}.{model}\" name=\"{model} {verb} #{n}\" file=\"./{file}\" time=\"{time}\""
        );
        if n * 7 % tests.max(1) < failures && n < tests {
            let _ = writeln!(s, ">");
            let _ = writeln!(
                s,
                "    <failure message=\"expected: 2 got: 1\" type=\"RSpec::Expectations::ExpectationNotMetError\">FAILED: {model} {verb}\n./{file}:42</failure>"
            );
            let _ = writeln!(s, "  </testcase>");
        } else {
            let _ = writeln!(s, "/>");
        }
    }
    s.push_str("</testsuite>\n");
    s
}

fn lcov(rng: &mut Rng) -> String {
    let mut s = String::new();
    for model in MODELS {
        let _ = writeln!(s, "TN:\nSF:app/models/{}.rb", model.to_lowercase());
        let lines = 40 + rng.below(80);
        let mut hit = 0;
        for l in 1..=lines {
            let n = if rng.below(10) == 0 {
                0
            } else {
                1 + rng.below(40)
            };
            hit += u64::from(n > 0);
            let _ = writeln!(s, "DA:{l},{n}");
        }
        let _ = writeln!(s, "LF:{lines}\nLH:{hit}\nend_of_record");
    }
    s
}

fn coverage_index(rng: &mut Rng) -> String {
    let mut s = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Code coverage report for All files</title></head>\n<body>\n<h1>All files</h1>\n<table class=\"coverage-summary\">\n<tr><th>File</th><th>Statements</th><th>Lines</th></tr>\n",
    );
    for model in MODELS {
        let lower = model.to_lowercase();
        let pct = 70 + rng.below(30);
        let _ = writeln!(
            s,
            "<tr><td><a href=\"app/models/{lower}.rb.html\">app/models/{lower}.rb</a></td><td>{pct}.{}%</td><td>{pct}%</td></tr>",
            rng.below(10)
        );
    }
    s.push_str("</table>\n</body>\n</html>\n");
    s
}

fn coverage_page(rng: &mut Rng, model: &str) -> String {
    let class = format!("{}{}", model[..1].to_uppercase(), &model[1..]);
    let mut s = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Code coverage report for app/models/{model}.rb</title></head>\n<body>\n<pre class=\"prettyprint lang-ruby\">\n"
    );
    let _ = writeln!(
        s,
        "<span class=\"cline-any cline-yes\">1</span>class {class} &lt; ApplicationRecord"
    );
    for l in 0..900u64 {
        let hits = if rng.below(9) == 0 {
            0
        } else {
            1 + rng.below(120)
        };
        let cls = if hits == 0 { "cline-no" } else { "cline-yes" };
        let body = match l % 6 {
            0 => format!(
                "  def {}_{l}",
                rng.pick(&["total", "valid", "apply", "normalize", "notify"])
            ),
            1 => format!(
                "    value = attributes.fetch(:{}, {})",
                rng.pick(&["price", "qty", "email", "code"]),
                rng.below(100)
            ),
            2 => "    return nil if value.blank?".to_string(),
            3 => format!("    value * {}.{:02}", rng.below(3), rng.below(100)),
            4 => "  end".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(s, "<span class=\"cline-any {cls}\">{hits}</span>{body}");
    }
    s.push_str("end\n</pre>\n</body>\n</html>\n");
    s
}

fn eslint_log(rng: &mut Rng) -> String {
    let mut s = String::from("$ yarn eslint --format stylish app/javascript\n\n");
    let rules = [
        ("no-unused-vars", "'%' is assigned a value but never used"),
        (
            "react-hooks/exhaustive-deps",
            "React Hook useEffect has a missing dependency: '%'",
        ),
        (
            "prefer-const",
            "'%' is never reassigned. Use 'const' instead",
        ),
        ("eqeqeq", "Expected '===' and instead saw '=='"),
    ];
    let names = [
        "cart",
        "total",
        "coupon",
        "setItems",
        "priceFormatter",
        "user",
    ];
    let mut problems = 0;
    for file in [
        "components/Cart.jsx",
        "components/Checkout.jsx",
        "components/ProductList.jsx",
        "lib/money.js",
        "lib/api.js",
        "pages/Account.jsx",
    ] {
        let _ = writeln!(s, "/app/app/javascript/{file}");
        for _ in 0..(20 + rng.below(30)) {
            let (rule, msg) = rules[rng.below(rules.len() as u64) as usize];
            let msg = msg.replace('%', rng.pick(&names));
            let _ = writeln!(
                s,
                "  {}:{}  warning  {msg}  {rule}",
                1 + rng.below(300),
                1 + rng.below(40)
            );
            problems += 1;
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\u{2716} {problems} problems (0 errors, {problems} warnings)\n\nDone in 18.42s."
    );
    s
}

fn docker_log(rng: &mut Rng) -> String {
    let mut s = String::from("$ docker buildx build --tag registry.example.com/webapp:3f9c2a7 .\n");
    let steps = [
        "FROM docker.io/library/ruby:3.3-slim",
        "RUN apt-get update && apt-get install -y build-essential libpq-dev nodejs",
        "COPY Gemfile Gemfile.lock ./",
        "RUN bundle install --jobs 8",
        "COPY package.json yarn.lock ./",
        "RUN yarn install --frozen-lockfile",
        "COPY . .",
        "RUN bundle exec rails assets:precompile",
        "RUN rm -rf node_modules tmp/cache",
    ];
    for (i, step) in steps.iter().enumerate() {
        let n = i + 2;
        let _ = writeln!(s, "#{n} [build {}/{}] {step}", i + 1, steps.len());
        for _ in 0..(60 + rng.below(120)) {
            let t = rng.below(900) as f64 / 10.0;
            let line = match rng.below(4) {
                0 => format!(
                    "Fetching {}-{}.{}.{}",
                    rng.pick(&["rack", "nokogiri", "pg", "puma", "sidekiq", "rails"]),
                    rng.below(9),
                    rng.below(20),
                    rng.below(10)
                ),
                1 => format!(
                    "Installing {} {}.{}.{}",
                    rng.pick(&["actionpack", "activerecord", "bootsnap", "zeitwerk"]),
                    rng.below(8),
                    rng.below(3),
                    rng.below(9)
                ),
                2 => format!("[{}/4] Linking dependencies...", 1 + rng.below(4)),
                _ => format!(
                    "sha256:{:016x}{:016x} {}B / {}B",
                    rng.next(),
                    rng.next(),
                    rng.below(1 << 20),
                    1 << 20
                ),
            };
            let _ = writeln!(s, "#{n} {t:.1} {line}");
        }
        if i == 3 {
            let _ = writeln!(s, "#{n} 41.2 ERROR: Gem::RemoteFetcher::FetchError: timed out (https://rubygems.org/gems/pg-1.5.6.gem), retrying (1/3)");
        }
        let _ = writeln!(s, "#{n} DONE {}.{}s", rng.below(90), rng.below(10));
    }
    let _ = writeln!(s, "#12 exporting to image\n#12 writing image sha256:9b2f7c1e4a8d3f6b0c5e2a7d9f1b4c8e3a6d0f2b5c9e1a4d7f0b3c6e9a2d5f8b done\n#12 DONE 3.1s");
    s
}

fn cucumber_log(rng: &mut Rng, fail: bool) -> String {
    let mut s = String::from("Using the default profile...\n");
    let features = [
        "checkout",
        "signup",
        "search",
        "account_settings",
        "coupons",
    ];
    for (i, f) in features.iter().enumerate() {
        let _ = writeln!(s, "Feature: {}\n", f.replace('_', " "));
        for sc in 0..6 {
            let _ = writeln!(
                s,
                "  Scenario: {} works for case {sc}   # features/{f}.feature:{}",
                f.replace('_', " "),
                5 + sc * 9
            );
            for step in [
                "Given I am signed in",
                "When I add 2 items to my cart",
                "And I go to checkout",
                "Then I should see the order total",
            ] {
                let ms = rng.below(800);
                if fail && i == 0 && sc == 3 && step.starts_with("Then") {
                    let _ = writeln!(s, "    {step}   # FAILED ({ms}ms)");
                    let _ = writeln!(s, "      ERROR expected to find text \"$42.00\" in \"Order total $21.00\" (RSpec::Expectations::ExpectationNotMetError)");
                    let _ = writeln!(
                        s,
                        "      Screenshot saved to tmp/screenshots/checkout_fails.png"
                    );
                } else {
                    let _ = writeln!(s, "    {step}   # passed ({ms}ms)");
                }
            }
            s.push('\n');
        }
    }
    let failed = u32::from(fail);
    let _ = writeln!(s, "30 scenarios ({failed} failed, {} passed)\n120 steps ({failed} failed, {} passed)\n2m41.307s", 30 - failed, 120 - failed);
    s
}

/// Deflate with stored (uncompressed) blocks only: valid and trivially simple.
fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 5);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// A zip of stored (uncompressed) entries, with directory entries for their parents:
/// local headers, the central directory and its end record.
fn zip_stored(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    // 2026-01-02 03:18 in MS-DOS time and date.
    let (time, date) = (3u16 << 11 | 18 << 5, (2026u16 - 1980) << 9 | 1 << 5 | 2);
    let mut entries: Vec<(String, &[u8])> = Vec::new();
    for (name, data) in files {
        if let Some((dir, _)) = name.rsplit_once('/') {
            let d = format!("{dir}/");
            if !entries.iter().any(|(n, _)| *n == d) {
                entries.push((d, &[]));
            }
        }
        entries.push((name.clone(), data));
    }
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in &entries {
        let offset = out.len() as u32;
        let crc = crc32fast::hash(data);
        let fields = |h: &mut Vec<u8>| {
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&time.to_le_bytes());
            h.extend_from_slice(&date.to_le_bytes());
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        out.extend_from_slice(b"PK\x03\x04");
        fields(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&(3u16 << 8 | 20).to_le_bytes()); // made by unix
        fields(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        let mode: u32 = if name.ends_with('/') {
            0o40755
        } else {
            0o100644
        };
        central.extend_from_slice(&(mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_at, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// An RGB PNG: a gradient with some seeded noise.
fn png(rng: &mut Rng, w: u32, h: u32) -> Vec<u8> {
    let tint = rng.bytes(3);
    let mut raw = Vec::with_capacity(((w * 3 + 1) * h) as usize);
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            let noise = (rng.next() & 0x0f) as u8;
            raw.push(((x * 255 / w) as u8) ^ tint[0] ^ noise);
            raw.push(((y * 255 / h) as u8) ^ tint[1]);
            raw.push(tint[2].wrapping_add(noise));
        }
    }
    let mut zlib = vec![0x78, 0x01];
    zlib.extend(deflate_stored(&raw));
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", zlib), (b"IEND", Vec::new())] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(&data);
        out.extend_from_slice(kind);
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    out
}

/// One ustar header block.
fn tar_header(name: &str, size: usize, dir: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, if dir { b"0000755\0" } else { b"0000644\0" });
    put(&mut h, 108, b"0001750\0");
    put(&mut h, 116, b"0001750\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(
        &mut h,
        136,
        format!("{:011o}\0", 1_767_323_045u64).as_bytes(),
    );
    put(&mut h, 148, b"        ");
    h[156] = if dir { b'5' } else { b'0' };
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    put(&mut h, 265, b"buildkite-agent");
    put(&mut h, 297, b"buildkite-agent");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

/// `dist/webapp.tar.gz`: a real gzip'd tar of a small built web app.
fn tarball(rng: &mut Rng) -> Vec<u8> {
    let mut app_js = String::from("\"use strict\";\n");
    for i in 0..1500 {
        let _ = writeln!(
            app_js,
            "function m{i}(a,b){{return a*{}+b-{};}}",
            rng.below(97),
            rng.below(13)
        );
    }
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("webapp/", Vec::new()),
        (
            "webapp/package.json",
            b"{\n  \"name\": \"webapp\",\n  \"version\": \"1.4.2\",\n  \"private\": true\n}\n"
                .to_vec(),
        ),
        (
            "webapp/REVISION",
            b"3f9c2a7d41b8e06c5a2d9e1f7b4c8a0d2e6f1a3b\n".to_vec(),
        ),
        ("webapp/public/", Vec::new()),
        ("webapp/public/app.js", app_js.into_bytes()),
        ("webapp/public/vendor.bin", rng.bytes(768 * 1024)),
    ];
    let mut tar = Vec::new();
    for (name, data) in &files {
        tar.extend_from_slice(&tar_header(name, data.len(), name.ends_with('/')));
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);

    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    gz.extend(deflate_stored(&tar));
    gz.extend_from_slice(&crc32fast::hash(&tar).to_le_bytes());
    gz.extend_from_slice(&(tar.len() as u32).to_le_bytes());
    gz
}

/// A job name for the log's header lines: lower case, runs of other characters as one `-`.
fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}
