//! Who may do what: the write token (every change), the optional read token
//! (everything else), the dashboard's session cookie, and the cross-site
//! checks that keep another origin's page from making a signed-in browser
//! change anything.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither their
//! contents nor their length leak through timing, and they are never logged
//! (`Debug` shows only whether one is set).

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// The cookie the dashboard signs in with. It holds a digest of the token,
/// not the token: any token's characters are then a valid cookie value.
pub const COOKIE: &str = "dispatcher_session";

/// A secret compared only through its digest.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(token: &str) -> Secret {
        Secret(Sha256::digest(token.as_bytes()).into())
    }

    fn matches_token(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        eq32(&d, &self.0)
    }

    /// The cookie value for this secret: a digest of its digest, so that the
    /// cookie jar never holds the token itself.
    pub fn cookie_value(&self) -> String {
        hex::encode(Sha256::digest([b"session:".as_slice(), &self.0].concat()))
    }

    fn matches_cookie(&self, presented: &str) -> bool {
        let want = self.cookie_value();
        presented.len() == want.len() && eq_bytes(presented.as_bytes(), want.as_bytes())
    }
}

fn eq32(a: &[u8; 32], b: &[u8; 32]) -> bool {
    eq_bytes(a, b)
}

/// Equal-length comparison that looks at every byte.
fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    None,
    Read,
    Write,
}

#[derive(Clone, Debug, Default)]
pub struct Access {
    pub write: Option<Secret>,
    pub read: Option<Secret>,
    /// Origins besides the request's own `Host` whose pages may make changes:
    /// the public URL when a proxy in front rewrites `Host`.
    pub origins: Vec<String>,
}

impl Access {
    pub fn new(write: Option<&str>, read: Option<&str>) -> Access {
        Access {
            write: write.filter(|t| !t.is_empty()).map(Secret::new),
            read: read.filter(|t| !t.is_empty()).map(Secret::new),
            origins: vec![],
        }
    }

    /// Also trusts pages served from this URL's origin (`--advertise-url`).
    pub fn trusting(mut self, url: Option<&str>) -> Access {
        if let Some(u) = url {
            let origin = origin_of(u);
            if !origin.is_empty() {
                self.origins.push(origin);
            }
        }
        self
    }

    /// Why a change comes from another site's page, if it does (see
    /// [`cross_site`]); pages from a trusted origin are not.
    pub fn cross_site(&self, headers: &HeaderMap) -> Option<String> {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if origin.is_some_and(|o| self.origins.iter().any(|t| t.eq_ignore_ascii_case(o))) {
            return None;
        }
        cross_site(headers)
    }

    /// The secret a token matches, and what that secret grants by itself.
    fn matching(&self, token: &str) -> Option<(&Secret, Grant)> {
        match (&self.write, &self.read) {
            (Some(w), _) if w.matches_token(token) => Some((w, Grant::Write)),
            (_, Some(r)) if r.matches_token(token) => Some((r, Grant::Read)),
            _ => None,
        }
    }

    /// A read token alone guards everything: it is then also the write token.
    fn lift(&self, g: Grant) -> Grant {
        match g {
            Grant::Read if self.write.is_none() => Grant::Write,
            g => g,
        }
    }

    /// What a token grants.
    pub fn grant_for_token(&self, token: &str) -> Grant {
        self.lift(self.matching(token).map_or(Grant::None, |(_, g)| g))
    }

    /// What a request's bearer token or session cookie grants. With no
    /// token at all everyone may do everything; with only a write token,
    /// reads are open; with only a read token, it guards everything.
    pub fn grant(&self, headers: &HeaderMap) -> Grant {
        if self.write.is_none() && self.read.is_none() {
            return Grant::Write;
        }
        let presented = if let Some(t) = bearer(headers) {
            self.grant_for_token(t)
        } else if let Some(c) = cookie(headers, COOKIE) {
            if self.write.as_ref().is_some_and(|s| s.matches_cookie(c)) {
                Grant::Write
            } else if self.read.as_ref().is_some_and(|s| s.matches_cookie(c)) {
                Grant::Read
            } else {
                Grant::None
            }
        } else {
            Grant::None
        };
        let presented = self.lift(presented);
        let open = if self.read.is_none() {
            Grant::Read
        } else {
            Grant::None
        };
        presented.max(open)
    }

    /// The secret a session cookie is made from, for a token that grants something.
    pub fn secret_for(&self, token: &str) -> Option<&Secret> {
        self.matching(token).map(|(s, _)| s)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why a request that would change something comes from another site, if it
/// does. Browsers send `Origin` on every cross-origin POST (and
/// `Sec-Fetch-Site`); curl and other tools send neither, so K3's commands are
/// unaffected.
pub fn cross_site(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site == "cross-site" || site == "same-site" {
            return Some(format!("Sec-Fetch-Site: {site}"));
        }
    }
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    if origin == "null" || authority.is_empty() || !authority.eq_ignore_ascii_case(host) {
        Some(format!("Origin: {origin} (this server is {host})"))
    } else {
        None
    }
}

/// `scheme://authority` of a URL, as browsers write `Origin`.
fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    )
}

/// Reads a token from the first line of a file.
pub fn token_from_file(path: &std::path::Path, flag: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!(
            "{flag} {}: the file is empty; its first line is the token",
            path.display()
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn grants_follow_the_configured_tokens() {
        let open = Access::new(None, None);
        assert_eq!(open.grant(&HeaderMap::new()), Grant::Write);
        let w = Access::new(Some("w"), None);
        assert_eq!(w.grant(&HeaderMap::new()), Grant::Read);
        assert_eq!(
            w.grant(&with(&[("authorization", "Bearer w")])),
            Grant::Write
        );
        assert_eq!(
            w.grant(&with(&[("authorization", "Bearer x")])),
            Grant::Read
        );
        let rw = Access::new(Some("w"), Some("r"));
        assert_eq!(rw.grant(&HeaderMap::new()), Grant::None);
        assert_eq!(
            rw.grant(&with(&[("authorization", "Bearer r")])),
            Grant::Read
        );
        assert_eq!(
            rw.grant(&with(&[("authorization", "Bearer w")])),
            Grant::Write
        );
        let r = Access::new(None, Some("r"));
        assert_eq!(r.grant(&HeaderMap::new()), Grant::None);
        assert_eq!(
            r.grant(&with(&[("authorization", "Bearer r")])),
            Grant::Write
        );
    }

    #[test]
    fn the_session_cookie_grants_what_its_token_does() {
        let rw = Access::new(Some("w"), Some("r"));
        let c = rw.secret_for("r").unwrap().cookie_value();
        let h = with(&[("cookie", &format!("a=b; {COOKIE}={c}"))]);
        assert_eq!(rw.grant(&h), Grant::Read);
        assert!(!c.contains('r'), "the cookie is not the token");
        let h = with(&[("cookie", &format!("{COOKIE}=deadbeef"))]);
        assert_eq!(rw.grant(&h), Grant::None);
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        assert!(cross_site(&with(&[("host", "127.0.0.1:5000")])).is_none());
        let same = [
            ("host", "127.0.0.1:5000"),
            ("origin", "http://127.0.0.1:5000"),
        ];
        assert!(cross_site(&with(&same)).is_none());
        let other = [
            ("host", "127.0.0.1:5000"),
            ("origin", "http://evil.example"),
        ];
        assert!(cross_site(&with(&other)).unwrap().contains("evil.example"));
        assert!(cross_site(&with(&[("host", "h"), ("origin", "null")])).is_some());
        assert!(cross_site(&with(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&with(&[("sec-fetch-site", "same-origin")])).is_none());
    }

    #[test]
    fn pages_from_the_advertised_url_may_make_changes_behind_a_proxy() {
        let a = Access::new(None, None).trusting(Some("https://Dispatch.Example/ui"));
        let proxied = [
            ("host", "10.0.0.5:5000"),
            ("origin", "https://dispatch.example"),
        ];
        assert!(a.cross_site(&with(&proxied)).is_none());
        let other = [
            ("host", "10.0.0.5:5000"),
            ("origin", "https://evil.example"),
        ];
        assert!(a.cross_site(&with(&other)).is_some());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let a = Access::new(Some("hunter2"), Some("swordfish"));
        let d = format!("{a:?}");
        assert!(!d.contains("hunter2") && !d.contains("swordfish"), "{d}");
    }
}
