//! Bearer-key authentication with constant-time comparison.

use subtle::ConstantTimeEq;

/// Whether `Authorization` header value `header` carries one of `keys`. Every key is compared, in
/// constant time for equal lengths, so timing does not reveal which key (or how much of it) matched.
pub fn authorized(keys: &[String], header: Option<&str>) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
        return false;
    };
    let mut ok = subtle::Choice::from(0u8);
    for k in keys {
        ok |= k.as_bytes().ct_eq(given.as_bytes());
    }
    ok.into()
}

/// Keys from EMBEDRANK_API_KEY-style text: comma-separated, blanks ignored.
pub fn split_keys(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys() {
        let keys = split_keys("alpha, beta,,");
        assert_eq!(keys, vec!["alpha", "beta"]);
        assert!(authorized(&keys, Some("Bearer beta")));
        assert!(authorized(&keys, Some("Bearer alpha")));
        assert!(!authorized(&keys, Some("Bearer alph")));
        assert!(!authorized(&keys, Some("beta")));
        assert!(!authorized(&keys, None));
        assert!(!authorized(&[], Some("Bearer ")));
    }
}
