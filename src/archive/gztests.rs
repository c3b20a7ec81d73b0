//! Access points: every point resumes to exactly the right bytes (single and multi-member
//! gzip, any feeding pattern), points are persisted losslessly, broken input is refused.

use std::io::Write;

use proptest::prelude::*;

use super::*;

fn gz(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Compressible but varied bytes: words from a small vocabulary, some random noise.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: [&[u8]; 8] = [
        b"alpha ",
        b"beta ",
        b"gamma\n",
        b"<tag>",
        b"0123",
        b"zz",
        b" ",
        b"lorem ipsum ",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = next();
        if r % 11 == 0 {
            out.push((r >> 8) as u8);
        } else {
            out.extend_from_slice(words[(r >> 16) as usize % words.len()]);
        }
    }
    out.truncate(len);
    out
}

/// Indexes `comp` fed in pieces of `chunk` bytes: the decompressed bytes and the points.
fn index(comp: &[u8], span: u64, chunk: usize) -> (Vec<u8>, Vec<Point>) {
    let mut ix = Indexer::new(span);
    let mut out = Vec::new();
    for c in comp.chunks(chunk.max(1)) {
        ix.feed(c, &mut |d| {
            out.extend_from_slice(d);
            Ok(())
        })
        .unwrap();
    }
    assert_eq!(ix.total_out(), out.len() as u64);
    (out, ix.finish(true).unwrap())
}

/// Decompresses from `p` to the end, feeding `chunk` bytes at a time.
fn extract(comp: &[u8], p: &Point, chunk: usize) -> Vec<u8> {
    let mut x = Extractor::new(p).unwrap();
    assert_eq!(x.next_in(), p.start());
    let mut out = Vec::new();
    let mut at = p.out;
    while (x.next_in() as usize) < comp.len() {
        let s = x.next_in() as usize;
        let e = (s + chunk.max(1)).min(comp.len());
        x.feed(&comp[s..e], &mut |o, d| {
            assert_eq!(o, at);
            at += d.len() as u64;
            out.extend_from_slice(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(x.next_in() as usize, e);
    }
    assert_eq!(x.at(), at);
    out
}

fn check_all_points(data: &[u8], comp: &[u8], span: u64, chunk: usize) -> Vec<Point> {
    let (out, points) = index(comp, span, chunk);
    assert!(out == data, "the pass decompresses the data");
    assert!(!points.is_empty());
    assert_eq!(points[0].out, 0);
    for p in &points {
        let got = extract(comp, p, chunk);
        assert!(
            got == data[p.out as usize..],
            "resumes at {} (bit {})",
            p.out,
            p.bit
        );
    }
    points
}

#[test]
fn every_point_of_a_large_stream_resumes_exactly() {
    let data = text(3 << 20, 1);
    let comp = gz(&data, 6);
    let points = check_all_points(&data, &comp, 256 << 10, 100_000);
    assert!(points.len() >= 6, "{} points", points.len());
    // Most block boundaries of compressed data are not byte-aligned: priming is exercised.
    assert!(points.iter().any(|p| p.bit % 8 != 0));
    assert!(points.windows(2).all(|w| w[1].out - w[0].out >= 256 << 10));
    assert!(points.iter().skip(1).all(|p| p.window.len() == WINSIZE));
}

#[test]
fn stored_and_incompressible_blocks_resume_too() {
    let mut data = text(400_000, 2);
    let noise: Vec<u8> = (0..600_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    data.extend_from_slice(&noise);
    for level in [0, 1, 9] {
        check_all_points(&data, &gz(&data, level), 64 << 10, 7777);
    }
}

#[test]
fn multi_member_gzip_resumes_across_members() {
    let parts = [text(300_000, 3), text(10, 4), Vec::new(), text(500_000, 5)];
    let mut comp = Vec::new();
    let mut data = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        comp.extend_from_slice(&gz(p, [6, 1, 9, 0][i]));
        data.extend_from_slice(p);
    }
    let points = check_all_points(&data, &comp, 50_000, 4096);
    // A point in the last member, after its header.
    assert!(points.iter().any(|p| p.out >= 300_010));
}

#[test]
fn points_are_thinned_past_the_limit() {
    // Every member's header ends at a boundary: 3000 members, 3000 candidate points.
    let mut data = Vec::new();
    let mut comp = Vec::new();
    for i in 0..3000 {
        let d = text(200, i);
        comp.extend_from_slice(&gz(&d, 6));
        data.extend_from_slice(&d);
    }
    let (_, points) = index(&comp, 1, 1 << 16);
    assert!(points.len() <= MAX_POINTS);
    assert!(points.len() > MAX_POINTS / 4, "{}", points.len());
    for p in points.iter().step_by(97) {
        assert!(extract(&comp, p, 1 << 16) == data[p.out as usize..]);
    }
}

#[test]
fn truncated_corrupt_and_empty_input_is_refused() {
    let data = text(200_000, 7);
    let comp = gz(&data, 6);
    let mut ix = Indexer::new(SPAN);
    ix.feed(&comp[..comp.len() / 2], &mut |_| Ok(())).unwrap();
    assert!(ix.finish(true).is_err(), "truncated");
    // Stopping early on purpose keeps the points so far.
    let mut ix = Indexer::new(SPAN);
    ix.feed(&comp[..comp.len() / 2], &mut |_| Ok(())).unwrap();
    assert_eq!(ix.finish(false).unwrap().len(), 1);
    let mut bad = comp.clone();
    for b in &mut bad[100..200] {
        *b ^= 0x5a;
    }
    let mut ix = Indexer::new(SPAN);
    assert!(ix.feed(&bad, &mut |_| Ok(())).is_err(), "corrupt");
    assert!(Indexer::new(SPAN).finish(true).is_err(), "empty");
    let mut ix = Indexer::new(SPAN);
    assert!(ix.feed(b"not gzip at all", &mut |_| Ok(())).is_err());
    // A sink error stops the pass.
    let mut ix = Indexer::new(SPAN);
    let r = ix.feed(&comp, &mut |_| Err(corrupt("enough")));
    assert_eq!(r, Err(corrupt("enough")));
}

#[test]
fn points_round_trip_and_damaged_blobs_are_refused() {
    let data = text(1 << 20, 8);
    let (_, points) = index(&gz(&data, 6), 100_000, 1 << 20);
    let b = encode_points(&points);
    assert_eq!(decode_points(&b), Some(points.clone()));
    assert_eq!(decode_points(&b[..b.len() - 1]), None);
    assert_eq!(decode_points(b"bkfsgzp0\0\0\0\0"), None);
    assert_eq!(point_for(&points, 0).unwrap().out, 0);
    let last = points.last().unwrap();
    assert_eq!(point_for(&points, u64::MAX).unwrap(), last);
    assert_eq!(
        point_for(&points, last.out - 1).unwrap(),
        &points[points.len() - 2]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_gzip_every_point_resumes_to_the_right_bytes(
        members in proptest::collection::vec((0usize..120_000, any::<u64>(), 0u32..10), 1..4),
        span in 1u64..40_000,
        chunk in 1usize..70_000,
    ) {
        let mut comp = Vec::new();
        let mut data = Vec::new();
        for (len, seed, level) in &members {
            let d = text(*len, *seed);
            comp.extend_from_slice(&gz(&d, *level));
            data.extend_from_slice(&d);
        }
        let (out, points) = index(&comp, span, chunk);
        prop_assert!(out == data);
        for p in &points {
            let got = extract(&comp, p, chunk);
            prop_assert!(got == data[p.out as usize..], "point at {} bit {}", p.out, p.bit);
        }
    }
}

#[test]
fn bytes_after_the_last_member_that_are_not_gzip_end_the_data() {
    let data = text(300_000, 11);
    let one = gz(&data, 6);
    let two = [gz(&data[..100_000], 1), gz(&data[100_000..], 9)].concat();
    let paddings: [&[u8]; 5] = [
        &[0; 512],
        &[0; 10240],
        b"trailing garbage, not a member\n",
        &[0x1f],
        &[0x1f, 0, 0, 0],
    ];
    for comp in [&one, &two] {
        for pad in paddings {
            let padded = [comp.as_slice(), pad].concat();
            for chunk in [1, 7, 4096, comp.len() - 1, comp.len(), 1 << 20] {
                check_all_points(&data, &padded, 50_000, chunk);
            }
        }
    }
    // The first bytes must be gzip, though.
    let mut ix = Indexer::new(SPAN);
    assert!(ix.feed(&[0; 512], &mut |_| Ok(())).is_err());
    // And a member after the padding is not looked for: padding ends the data.
    let comp = [one.as_slice(), &[0; 64], &gz(b"more", 6)].concat();
    let (out, _) = index(&comp, SPAN, 1000);
    assert!(out == data);
}

#[test]
fn a_sink_that_wants_no_more_ends_the_pass() {
    let data = text(2 << 20, 12);
    // What follows the wanted bytes would fail: a gzip magic, then junk.
    let mut comp = gz(&data, 6);
    comp.extend_from_slice(&[0x1f, 0x8b, 8, 0xe0, 0, 0, 0, 0, 0, 3, 1, 2, 3]);
    let mut ix = Indexer::new(100_000);
    assert!(
        ix.feed(&comp, &mut |_| Ok(())).is_err(),
        "the junk is corrupt"
    );
    let mut ix = Indexer::new(100_000);
    let mut got = 0usize;
    let want = 700_000;
    ix.feed_while(&comp, &mut |d| {
        got += d.len();
        Ok(got < want)
    })
    .unwrap();
    assert!(got >= want && got < want + WINSIZE, "{got}");
    assert_eq!(ix.total_out(), got as u64);
    // Later input is not decompressed either.
    ix.feed(&comp, &mut |_| panic!("fed after the end"))
        .unwrap();
    let points = ix.finish(true).unwrap();
    assert!(!points.is_empty() && points.iter().all(|p| p.out <= got as u64));
    // An extractor told where the data ends never inflates what follows.
    let (_, points) = index(&gz(&data, 6), 100_000, 1 << 20);
    for p in points.iter().step_by(3) {
        let mut x = Extractor::new(p).unwrap().until(data.len() as u64);
        let mut out = Vec::new();
        x.feed(&comp[p.start() as usize..], &mut |_, d| {
            out.extend_from_slice(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(x.next_in(), comp.len() as u64);
        assert!(out == data[p.out as usize..], "from {}", p.out);
        let mut x = Extractor::new(p).unwrap();
        let r = x.feed(&comp[p.start() as usize..], &mut |_, _| Ok(()));
        assert!(r.is_err(), "without until, the junk is inflated");
    }
}
