//! Request parameters with servlet semantics.
//!
//! The query string and an `application/x-www-form-urlencoded` body are merged, query first, and
//! the first value of a key wins. `+` decodes to a space. Values borrow from the request when no
//! decoding is needed. Lookups follow Nacos's `WebUtils`: `required` rejects a missing or empty
//! value, `optional` treats a blank value as absent, and both trim.
//!
//! Client quirk: Python's SDK encodes `None` as the literal string `None`; [`Params::optional`]
//! treats it as absent.

use std::borrow::Cow;

use crate::error::{ApiError, ApiResult};

/// Upper bound on the number of parameters one request may carry.
pub const MAX_PARAMS: usize = 256;

/// Decoded parameters of one request.
#[derive(Debug, Default)]
pub struct Params<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Params<'a> {
    /// Parses the query string and (optionally) a form body.
    ///
    /// Fails with 400 on invalid UTF-8, a NUL byte, or more than [`MAX_PARAMS`] pairs.
    pub fn parse(query: Option<&'a [u8]>, form: Option<&'a [u8]>) -> ApiResult<Params<'a>> {
        let mut p = Params { pairs: Vec::new() };
        for src in [query, form].into_iter().flatten() {
            for part in Split::new(src, b'&') {
                if part.is_empty() {
                    continue;
                }
                if p.pairs.len() >= MAX_PARAMS {
                    return Err(ApiError::bad_request(format!(
                        "too many parameters: the limit is {MAX_PARAMS}"
                    )));
                }
                let (k, v) = match find(part, b'=') {
                    Some(i) => (&part[..i], &part[i + 1..]),
                    None => (part, &b""[..]),
                };
                let k = decode(k)?;
                let v = decode(v)?;
                p.pairs.push((k, v));
            }
        }
        Ok(p)
    }

    /// The first raw (untrimmed) value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// `WebUtils.required`: missing or empty → 400 `Param '<key>' is required.`; else trimmed.
    pub fn required(&self, key: &str) -> ApiResult<&str> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v.trim()),
            _ => Err(ApiError::required(key)),
        }
    }

    /// `WebUtils.optional` without a default: blank or the literal `None` → `None`; else trimmed.
    pub fn optional(&self, key: &str) -> Option<&str> {
        let v = self.get(key)?.trim();
        if v.is_empty() || v == "None" {
            None
        } else {
            Some(v)
        }
    }

    /// [`Params::optional`] with a default.
    pub fn optional_or<'s>(&'s self, key: &str, default: &'s str) -> &'s str {
        self.optional(key).unwrap_or(default)
    }

    /// commons-lang3 `BooleanUtils.toBoolean`: `true/yes/on/y/t` in any case are true, anything
    /// else false; absent → `default`. Used for `healthy`, `enabled`, `ephemeral`.
    pub fn lenient_bool(&self, key: &str, default: bool) -> bool {
        match self.optional(key) {
            None => default,
            Some(v) => to_boolean(v),
        }
    }

    /// `Boolean.parseBoolean`: only `true` in any case is true; absent → `default`. Used for
    /// `healthyOnly` and `isCheck`.
    pub fn strict_bool(&self, key: &str, default: bool) -> bool {
        match self.optional(key) {
            None => default,
            Some(v) => v.eq_ignore_ascii_case("true"),
        }
    }

    /// `Integer.parseInt` of an optional value; a bad number → 400 `For input string: "<v>"`.
    pub fn int_or(&self, key: &str, default: i64) -> ApiResult<i64> {
        match self.optional(key) {
            None => Ok(default),
            Some(v) => parse_int(v),
        }
    }

    /// `Double.parseDouble` of an optional value; a bad number → 400 `For input string: "<v>"`.
    pub fn f64_or(&self, key: &str, default: f64) -> ApiResult<f64> {
        match self.optional(key) {
            None => Ok(default),
            Some(v) => parse_f64(v),
        }
    }
}

/// commons-lang3 `BooleanUtils.toBoolean(String)`.
pub fn to_boolean(v: &str) -> bool {
    ["true", "yes", "on", "y", "t"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
}

/// `Integer.parseInt`, with Java's error message.
pub fn parse_int(v: &str) -> ApiResult<i64> {
    v.parse::<i32>()
        .map(i64::from)
        .map_err(|_| ApiError::bad_request(format!("For input string: \"{v}\"")))
}

/// `Double.parseDouble`, with Java's error message. NaN is rejected.
pub fn parse_f64(v: &str) -> ApiResult<f64> {
    let t = v.trim();
    let t = t
        .strip_suffix(['d', 'D', 'f', 'F'])
        .filter(|s| !s.is_empty())
        .unwrap_or(t);
    match t.parse::<f64>() {
        Ok(x) if !x.is_nan() => Ok(x),
        _ if t.is_empty() => Err(ApiError::bad_request("empty String")),
        _ => Err(ApiError::bad_request(format!("For input string: \"{v}\""))),
    }
}

/// The first `byte` in `hay`, with the `memchr` crate's vectorised search: a large form (a 1 MB
/// metadata value, say) is scanned at memory speed rather than a byte per cycle; byte loops
/// over such bodies were 80% of a shard's time under a looping 1 MB attacker (issue 17).
fn find(hay: &[u8], byte: u8) -> Option<usize> {
    memchr::memchr(byte, hay)
}

/// `hay` split on `sep`, like `<[u8]>::split`, found with [`find`].
struct Split<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> Split<'a> {
    fn new(hay: &'a [u8], sep: u8) -> Self {
        Split {
            rest: Some(hay),
            sep,
        }
    }
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match find(rest, self.sep) {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Percent-decodes one component (`+` is a space). Borrows when nothing needs decoding.
fn decode(raw: &[u8]) -> ApiResult<Cow<'_, str>> {
    let needs = find(raw, b'%').is_some() || find(raw, b'+').is_some();
    let bytes: Cow<'_, [u8]> = if needs {
        let plus: Cow<'_, [u8]> = if raw.contains(&b'+') {
            Cow::Owned(
                raw.iter()
                    .map(|&b| if b == b'+' { b' ' } else { b })
                    .collect(),
            )
        } else {
            Cow::Borrowed(raw)
        };
        Cow::Owned(percent_encoding::percent_decode(&plus).collect())
    } else {
        Cow::Borrowed(raw)
    };
    if bytes.contains(&0) {
        return Err(ApiError::bad_request(
            "parameter contains a NUL byte, which is not allowed",
        ));
    }
    match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed),
        Cow::Owned(b) => String::from_utf8(b)
            .map(Cow::Owned)
            .map_err(|e| e.utf8_error()),
    }
    .map_err(|e| {
        ApiError::bad_request(format!(
            "parameter is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_wins_over_form_and_first_value_wins() {
        let p = Params::parse(Some(b"a=1&a=2&b=q"), Some(b"b=f&c=3")).unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("q"));
        assert_eq!(p.get("c"), Some("3"));
    }

    #[test]
    fn decodes_plus_and_percent() {
        let p = Params::parse(Some(b"m=a+b%2Bc%40"), None).unwrap();
        assert_eq!(p.get("m"), Some("a b+c@"));
    }

    #[test]
    fn required_and_optional_follow_webutils() {
        let p = Params::parse(Some(b"e=&s=+x+&n=None&b=%20"), None).unwrap();
        assert_eq!(p.required("e"), Err(ApiError::required("e")));
        assert_eq!(p.required("missing"), Err(ApiError::required("missing")));
        assert_eq!(p.required("s"), Ok("x"));
        // A blank value passes `required` (isEmpty, not isBlank) and trims to "".
        assert_eq!(p.required("b"), Ok(""));
        assert_eq!(p.optional("n"), None);
        assert_eq!(p.optional_or("b", "d"), "d");
    }

    #[test]
    fn booleans_follow_their_java_parsers() {
        let p = Params::parse(Some(b"a=True&b=yes&c=Y&d=1&e=false"), None).unwrap();
        assert!(p.lenient_bool("a", false));
        assert!(p.lenient_bool("b", false));
        assert!(p.lenient_bool("c", false));
        assert!(!p.lenient_bool("d", true));
        assert!(!p.lenient_bool("e", true));
        assert!(p.lenient_bool("absent", true));
        assert!(p.strict_bool("a", false));
        assert!(!p.strict_bool("b", false));
    }

    #[test]
    fn numbers_fail_like_java() {
        assert_eq!(parse_int("12"), Ok(12));
        assert_eq!(parse_int("+12"), Ok(12));
        assert_eq!(
            parse_int("1x"),
            Err(ApiError::bad_request("For input string: \"1x\""))
        );
        assert_eq!(
            parse_int("99999999999"),
            Err(ApiError::bad_request("For input string: \"99999999999\""))
        );
        assert_eq!(parse_f64("2"), Ok(2.0));
        assert_eq!(parse_f64("2.5d"), Ok(2.5));
        assert!(parse_f64("NaN").is_err());
        assert!(parse_f64("abc").is_err());
    }

    #[test]
    fn rejects_nul_and_bad_utf8() {
        assert_eq!(Params::parse(Some(b"a=%00"), None).unwrap_err().status, 400);
        assert_eq!(
            Params::parse(Some(b"a=%ff%fe"), None).unwrap_err().status,
            400
        );
        assert_eq!(
            Params::parse(Some(b"a=\xff"), None).unwrap_err().status,
            400
        );
    }

    #[test]
    fn split_and_find_match_the_byte_loops() {
        for hay in [&b""[..], b"&", b"a", b"&&a&&", b"a=1&b=&=c&", b"x&y"] {
            let mine: Vec<&[u8]> = Split::new(hay, b'&').collect();
            let std: Vec<&[u8]> = hay.split(|&b| b == b'&').collect();
            assert_eq!(mine, std, "{hay:?}");
            assert_eq!(find(hay, b'='), hay.iter().position(|&b| b == b'='));
        }
    }

    #[test]
    fn caps_the_number_of_pairs() {
        let q = "a=1&".repeat(MAX_PARAMS + 1);
        assert_eq!(
            Params::parse(Some(q.as_bytes()), None).unwrap_err().status,
            400
        );
    }
}
