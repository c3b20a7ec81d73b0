//! RFC 8288 `Link` header parsing, as much as pagination needs: `<url>; rel="next"` entries,
//! several per header, several rels per entry, quoted or bare, any parameter order.

/// Returns the URL of the first link whose `rel` list contains `want`.
pub fn find_rel(header: &str, want: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let url = rest[start + 1..end].trim();
        let after = &rest[end + 1..];
        // Parameters run to the next '<' that begins another link-value (commas inside
        // quoted strings are rare enough in rel values that splitting at '<' is sound).
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        for p in params.split(';') {
            let p = p.trim().trim_end_matches(',').trim();
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("rel") {
                continue;
            }
            let v = v.trim().trim_matches('"');
            if v.split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case(want))
            {
                return Some(url.to_string());
            }
        }
        rest = &after[params_end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_style() {
        let h = r#"<https://api.buildkite.com/v2/x?page=2&per_page=100>; rel="next", <https://api.buildkite.com/v2/x?page=5&per_page=100>; rel="last""#;
        assert_eq!(
            find_rel(h, "next").unwrap(),
            "https://api.buildkite.com/v2/x?page=2&per_page=100"
        );
        assert_eq!(
            find_rel(h, "last").unwrap(),
            "https://api.buildkite.com/v2/x?page=5&per_page=100"
        );
        assert_eq!(find_rel(h, "prev"), None);
    }

    #[test]
    fn odd_but_valid() {
        let h = "<http://h/a?page=3>;rel=next;title=\"x\",<http://h/a?page=1>; rel=\"first prev\"";
        assert_eq!(find_rel(h, "next").unwrap(), "http://h/a?page=3");
        assert_eq!(find_rel(h, "prev").unwrap(), "http://h/a?page=1");
        assert_eq!(find_rel(h, "NEXT").unwrap(), "http://h/a?page=3");
        assert_eq!(find_rel("", "next"), None);
        assert_eq!(find_rel("garbage", "next"), None);
        assert_eq!(find_rel("<unterminated; rel=next", "next"), None);
    }
}
