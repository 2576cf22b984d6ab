//! Percent-decoding (RFC 3986), shared by CloudEvents headers, route parameters and
//! query strings. Invalid escapes are kept as they are; invalid UTF-8 is replaced.

/// Decodes `%XX` escapes; with `plus_is_space` (form-encoded queries) `+` is a space.
pub fn decode(s: &str, plus_is_space: bool) -> String {
    let escaped = s.contains('%') || (plus_is_space && s.contains('+'));
    if !escaped {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn escapes_decode_and_bad_ones_stay() {
        assert_eq!(decode("a%20b", false), "a b");
        assert_eq!(decode("a+b%2B", true), "a b+");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("100%", false), "100%");
        assert_eq!(decode("%zz%4", false), "%zz%4");
        assert_eq!(decode("%C3%A9%é", false), "é%é");
    }
}
