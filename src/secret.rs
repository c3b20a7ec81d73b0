//! The API token, wrapped so that it cannot be printed by accident: its `Debug` and `Display`
//! show `***`. The only way to the text is [`Token::expose`], used when building the
//! `Authorization` header for the API host.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Token {
        Token(s.into().trim().to_string())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL fit for logs: scheme, host, port and path, without the query string (which carries
/// the signature of a signed storage URL) or any user info.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) => {
            let had_query = p.query().is_some();
            p.set_query(None);
            p.set_fragment(None);
            let _ = p.set_username("");
            let _ = p.set_password(None);
            let mut s = p.to_string();
            if had_query {
                s.push_str("?<redacted>");
            }
            s
        }
        Err(_) => "<unparsable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_formats() {
        let t = Token::new("bkua_secret\n");
        assert_eq!(format!("{t} {t:?}"), "*** Token(***)");
        assert_eq!(t.expose(), "bkua_secret");
    }

    #[test]
    fn redacts_query() {
        assert_eq!(
            redact_url("https://u:p@s3.example/a/b.txt?Expires=1&Signature=x"),
            "https://s3.example/a/b.txt?<redacted>"
        );
        assert_eq!(redact_url("http://127.0.0.1:9/x"), "http://127.0.0.1:9/x");
    }
}
