//! Unit and property tests of the log renderer.

use super::*;
use bkfs_fake::fakelog;
use proptest::prelude::*;

fn format_utc(ms: u64) -> String {
    let mut out = Vec::new();
    write_utc(ms, &mut out);
    String::from_utf8(out).unwrap()
}

fn plain(raw: &[u8]) -> String {
    String::from_utf8(render(raw, Mode::Plain)).unwrap()
}

fn stamped(raw: &[u8]) -> String {
    String::from_utf8(render(raw, Mode::Timestamps)).unwrap()
}

/// Feed `raw` in chunks cut at `cuts`; check each feed's output is a
/// prefix of the whole-stream output; return the total.
fn chunked(raw: &[u8], cuts: &[usize], mode: Mode, max_line: usize) -> Vec<u8> {
    let mut whole = Vec::new();
    let mut r = Renderer::with_max_line(mode, max_line);
    r.feed(raw, &mut whole);
    r.finish(&mut whole);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (raw.len() + 1)).collect();
    cuts.sort_unstable();
    let mut r = Renderer::with_max_line(mode, max_line);
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([raw.len()]) {
        r.feed(&raw[at..c], &mut out);
        at = c;
        assert!(whole.starts_with(&out), "partial output is not a prefix");
    }
    r.finish(&mut out);
    assert_eq!(out, whole, "chunked output differs");
    out
}

#[test]
fn strips_markers_colours_and_strings() {
    let raw = b"\x1b_bk;t=1700000000000\x07\x1b[1;31mred\x1b[0m plain\n\
        \x1b_bk;t=1700000000001\x1b\\\x1b]8;;http://x\x1b\\link\x1b]8;;\x07\x1bPdcs\x1b\\\n\
        \x1b^pm\x07\x1bXsos\x07\x1b(Bch\x1b=\x1b7arset\n";
    assert_eq!(plain(raw), "red plain\nlink\ncharset\n");
}

#[test]
fn carriage_return_overwrites() {
    assert_eq!(plain(b"50%\r100%\n"), "100%\n");
    assert_eq!(plain(b"abcdef\rXY\n"), "XYcdef\n");
    assert_eq!(plain(b"line\r\nnext\r\n"), "line\nnext\n");
    assert_eq!(plain(b"\r\r\rx\r\n"), "x\n");
}

#[test]
fn erase_in_line() {
    assert_eq!(plain(b"abcdef\rXY\x1b[K\n"), "XY\n");
    assert_eq!(plain(b"abcdef\rXY\x1b[0K\n"), "XY\n");
    assert_eq!(plain(b"abcdef\x1b[3D\x1b[1K\n"), "    ef\n");
    assert_eq!(plain(b"abcdef\x1b[1K\n"), "      \n");
    assert_eq!(plain(b"abcdef\x1b[2K\rnew\n"), "new\n");
    assert_eq!(plain(b"abc\x1b[2Kxy\n"), "   xy\n");
    assert_eq!(plain(b"abc\x1b[5Kxy\n"), "abcxy\n");
}

#[test]
fn cursor_moves_and_backspace() {
    assert_eq!(plain(b"abcdef\x1b[2DXY\n"), "abcdXY\n");
    assert_eq!(plain(b"abcdef\x1b[DX\n"), "abcdeX\n");
    assert_eq!(plain(b"abcdef\x1b[99DX\n"), "Xbcdef\n");
    assert_eq!(plain(b"abcdef\x1b[3GX\n"), "abXdef\n");
    assert_eq!(plain(b"abcdef\x1b[GX\n"), "Xbcdef\n");
    assert_eq!(plain(b"ab\x1b[3CX\n"), "ab   X\n");
    assert_eq!(plain(b"ab\x1b[3C\n"), "ab\n");
    assert_eq!(plain(b"abcdef\r\x1b[2CX\n"), "abXdef\n");
    assert_eq!(plain(b"abc\x08\x08X\n"), "aXc\n");
    assert_eq!(plain(b"\x08\x08a\n"), "a\n");
    assert_eq!(plain(b"ab\x1b[2C\x08\x08\x08X\n"), "aX\n");
    // Ignored: cursor up/down, position, screen clear, private modes.
    assert_eq!(
        plain(b"a\x1b[2A\x1b[B\x1b[H\x1b[2J\x1b[?25lb\x1b[1;1Hc\n"),
        "abc\n"
    );
}

#[test]
fn columns_are_chars_and_invalid_bytes_are_kept() {
    assert_eq!(
        plain("h\u{e9}llo\u{1f680}\rX\n".as_bytes()),
        "X\u{e9}llo\u{1f680}\n"
    );
    assert_eq!(
        plain("\u{e9}\u{e9}\u{e9}\x1b[2DX\n".as_bytes()),
        "\u{e9}X\u{e9}\n"
    );
    assert_eq!(plain("ab\u{20ac}\x08\x08Y\n".as_bytes()), "aY\u{20ac}\n");
    let out = render(b"a\xff\xe2\x82b\x1b[3DXY\n", Mode::Plain);
    assert_eq!(out, b"a\xffXYb\n");
    let out = render(b"\xe2\x82\xac\xff\rZ\n", Mode::Plain);
    assert_eq!(out, b"Z\xff\n");
    assert_eq!(render(b"x\xc3\r\xc3\xa9\n", Mode::Plain), b"\xc3\xa9\xc3\n");
}

#[test]
fn timestamps_mode() {
    let raw = b"\x1b_bk;t=1700000000123\x07first\n\
        second, no marker\n\
        \x1b_bk;t=1700000060000\x1b\\third\x1b_bk;t=1700000099999\x07 x\n\
        fourth\n";
    assert_eq!(
        stamped(raw),
        "[2023-11-14T22:13:20.123Z] first\n\
         [2023-11-14T22:13:20.123Z] second, no marker\n\
         [2023-11-14T22:14:20.000Z] third x\n\
         [2023-11-14T22:14:59.999Z] fourth\n"
    );
    assert_eq!(
        stamped(b"before\n\x1b_bk;t=0\x07\nafter"),
        "before\n[1970-01-01T00:00:00.000Z] \n[1970-01-01T00:00:00.000Z] after"
    );
    // Not markers: other APC payloads, junk after the digits, overflow.
    assert_eq!(
        stamped(b"\x1b_bk;x=5\x07a\n\x1b_bk;t=5x\x07b\n\x1b_bk;t=99999999999999999999\x07c\n"),
        "a\nb\nc\n"
    );
    assert_eq!(
        stamped(b"\x1b_bk;t=86400000;p=1\x07d\n"),
        "[1970-01-02T00:00:00.000Z] d\n"
    );
    assert_eq!(
        stamped(
            b"\x1b_bk;dt=5\x07a\n\x1b_bk;t=1000\x07b\n\x1b_bk;dt=250;x=y\x07c\n\x1b_bk;t=x\x07d\n"
        ),
        "[1970-01-01T00:00:00.005Z] a\n[1970-01-01T00:00:01.000Z] b\n\
         [1970-01-01T00:00:01.250Z] c\n[1970-01-01T00:00:01.250Z] d\n"
    );
}

#[test]
fn civil_dates() {
    assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(format_utc(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    assert_eq!(format_utc(253_402_300_799_000), "9999-12-31T23:59:59.000Z");
    assert_eq!(format_utc(u64::MAX), "584556019-04-03T14:25:51.615Z");
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
}

#[test]
fn partial_lines_and_truncated_sequences() {
    let mut r = Renderer::new(Mode::Plain);
    let mut out = Vec::new();
    r.feed(b"done\n\x1b_bk;t=17", &mut out);
    assert_eq!(out, b"done\n");
    r.feed(b"00\x07progress 5", &mut out);
    assert_eq!(out, b"done\n");
    r.feed(b"0%\x1b[", &mut out);
    let mut peek = out.clone();
    r.clone().finish(&mut peek);
    assert_eq!(peek, b"done\nprogress 50%");
    r.feed(b"1Dx\n", &mut out);
    assert_eq!(out, b"done\nprogress 50x\n");
    r.finish(&mut out);
    assert_eq!(out, b"done\nprogress 50x\n");
    assert_eq!(plain(b"a\n\x1b_bk;t=1\x07"), "a\n");
    assert_eq!(plain(b"a\x1b"), "a");
    assert_eq!(plain(b"a\x1b]unterminated\nstill in it\n"), "a");
    assert_eq!(plain(b"a\x1b[12;\n"), "a\n");
    assert_eq!(plain(b"x\x1b[31\x1b[1mY\n"), "xY\n");
    assert_eq!(plain(b"s\x1b_abc\x1b[32mT\n"), "sT\n");
    assert_eq!(plain(b"c\x1b]0;t\x18d\n"), "cd\n");
}

#[test]
fn other_controls_are_dropped() {
    assert_eq!(
        render(b"a\x00b\x07c\x0bd\x0ce\x7ff\tg\n", Mode::Plain),
        b"abcde\x7ff\tg\n"
    );
}

#[test]
fn long_lines_come_in_pieces() {
    let mut r = Renderer::new(Mode::Timestamps);
    let mut out = Vec::new();
    r.feed(&marker_bytes(1000), &mut out);
    let chunk = vec![b'x'; MAX_LINE / 4 + 7];
    for _ in 0..5 {
        r.feed(&chunk, &mut out);
    }
    let prefix = "[1970-01-01T00:00:01.000Z] ";
    assert_eq!(out.len(), prefix.len() + MAX_LINE);
    assert!(r.line.len() < MAX_LINE);
    r.feed(b"\n", &mut out);
    assert_eq!(out.len(), prefix.len() + chunk.len() * 5 + 1);
    // A progress line rewritten forever stays small.
    let mut r = Renderer::new(Mode::Plain);
    let mut out = Vec::new();
    for i in 0..100_000 {
        r.feed(format!("\rstep {i}").as_bytes(), &mut out);
    }
    assert!(out.is_empty() && r.line.len() < 64);
    r.finish(&mut out);
    assert_eq!(out, b"step 99999");
}

#[test]
fn long_overwrites_are_applied_in_bounded_runs() {
    let mut raw = b"abc\r".to_vec();
    raw.extend(std::iter::repeat_n(b'y', MAX_LINE + MAX_RUN + 10));
    raw.extend_from_slice(b"\rZ\n");
    let mut expect = vec![b'y'; MAX_LINE + MAX_RUN + 10];
    expect.push(b'\n');
    expect[MAX_LINE] = b'Z';
    let cuts = [
        3,
        4,
        5,
        MAX_RUN + 4,
        MAX_RUN + 5,
        MAX_LINE + 1,
        raw.len() - 2,
    ];
    assert_eq!(chunked(&raw, &cuts, Mode::Plain, MAX_LINE), expect);
}

#[test]
fn hostile_input_stays_bounded() {
    let mut r = Renderer::new(Mode::Plain);
    let mut out = Vec::new();
    r.feed(b"a\x1b_", &mut out);
    for _ in 0..1000 {
        r.feed(&[b'z'; 4096], &mut out);
    }
    r.feed(b"\x1b\\b\n", &mut out);
    assert_eq!(out, b"ab\n");
    assert_eq!(
        plain(b"\x1b[999999999999Cx\x1b[4294967295Gy\n").len(),
        2 * MAX_PAD + 3
    );
    let huge_csi = [&b"q\x1b["[..], &[b'1'; 10_000], b"Dr\n"].concat();
    assert_eq!(plain(&huge_csi), "qr\n");
}

#[test]
fn generated_log_renders_to_its_oracle() {
    let log = fakelog::generate(
        "unit",
        &["hello world", "second\tline", "", "caf\u{e9}"],
        1_700_000_000_000,
    );
    assert_eq!(plain(&log.raw), log.plain);
    assert!(log.plain.contains("\nhello world\n"));
    assert!(log.plain.contains("\n--- :rspec: Running unit\n"));
    let stamped = stamped(&log.raw);
    assert_eq!(stamped.lines().count(), log.plain.lines().count());
    assert!(stamped.lines().all(|l| l.starts_with("[2023-11-14T22:13:")));
    let f = fakelog::filler(7, 200_000, 0);
    assert!(f.raw.len() >= 200_000);
    assert_eq!(plain(&f.raw), f.plain);
}

fn marker_bytes(ms: u64) -> Vec<u8> {
    fakelog::marker(ms)
}

/// Bytes biased towards the interesting ones.
fn log_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>(),
        4 => prop::sample::select(b"\x1b\x07\r\n\x08\t[]_P^X\\;:?0123KDCGm bk;t=\xe2\x82\xac\xc3\xa9".to_vec()),
        2 => Just(b'a'),
    ];
    prop::collection::vec(byte, 0..400)
}

fn text_str() -> impl Strategy<Value = String> {
    "[^\\x00-\\x08\\x0a-\\x1f]{0,40}"
}

/// A terminal-ish token: a word of text or a control sequence.
fn token() -> impl Strategy<Value = (bool, String)> {
    prop_oneof![
        "[xyz ]{1,6}".prop_map(|t| (true, t)),
        prop::sample::select(vec![
            "\r",
            "\x08",
            "\x1b[K",
            "\x1b[1K",
            "\x1b[2K",
            "\x1b[3D",
            "\x1b[D",
            "\x1b[2C",
            "\x1b[4G",
            "\x1b[G",
            "\x1b[31m",
            "\n",
            "\x1b_bk;t=5\x07",
        ])
        .prop_map(|t| (false, t.to_string())),
    ]
}

proptest! {
    /// Columns are chars: replacing an ASCII letter by a multi-byte char in
    /// the text renders the same screen (exercises the non-ASCII paths
    /// against the ASCII fast paths).
    #[test]
    fn multibyte_chars_take_one_column(tokens in prop::collection::vec(token(), 0..40),
                                       wide in prop::sample::select(vec!["\u{e9}", "\u{20ac}", "\u{1f680}"])) {
        let ascii: String = tokens.iter().map(|(_, t)| t.as_str()).collect();
        let wide_raw: String = tokens
            .iter()
            .map(|(text, t)| if *text { t.replace('z', wide) } else { t.clone() })
            .collect();
        let expect = plain(ascii.as_bytes()).replace('z', wide);
        prop_assert_eq!(plain(wide_raw.as_bytes()), expect);
    }

    #[test]
    fn output_has_no_escapes(raw in log_bytes()) {
        for mode in [Mode::Plain, Mode::Timestamps] {
            let out = render(&raw, mode);
            prop_assert!(!out.iter().any(|&b| b < 0x20 && b != b'\t' && b != b'\n'), "{out:?}");
        }
    }

    #[test]
    fn plain_text_passes_through(raw in prop::collection::vec(
        prop_oneof![8 => 0x20u8..=0xff, 1 => Just(b'\t'), 1 => Just(b'\n')], 0..600)) {
        prop_assert_eq!(render(&raw, Mode::Plain), raw.clone());
        let mut r = Renderer::with_max_line(Mode::Plain, 7);
        let mut out = Vec::new();
        r.feed(&raw, &mut out);
        r.finish(&mut out);
        prop_assert_eq!(out, raw);
    }

    #[test]
    fn chunking_does_not_matter(raw in log_bytes(),
                                cuts in prop::collection::vec(any::<usize>(), 0..12),
                                small in any::<bool>()) {
        let max_line = if small { 5 } else { MAX_LINE };
        for mode in [Mode::Plain, Mode::Timestamps] {
            chunked(&raw, &cuts, mode, max_line);
        }
    }

    #[test]
    fn generated_logs_match_oracle(label in text_str(),
                                   body in prop::collection::vec(text_str(), 0..8),
                                   start in 0u64..4_000_000_000_000,
                                   seed in any::<u64>(),
                                   cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let body: Vec<&str> = body.iter().map(String::as_str).collect();
        let log = fakelog::generate(&label, &body, start);
        let out = chunked(&log.raw, &cuts, Mode::Plain, MAX_LINE);
        prop_assert_eq!(String::from_utf8(out).unwrap(), log.plain);
        let f = fakelog::filler(seed, 3000, start);
        prop_assert_eq!(String::from_utf8(render(&f.raw, Mode::Plain)).unwrap(), f.plain);
    }
}
