//! Writing JSON text by hand where serde's writer showed in a profile: strings are
//! written quoted as they are unless a byte needs an escape, which serde_json then
//! writes, so the text is what serde_json would write.

use serde_json::Value;

/// Appends `s` as a JSON string, as serde_json writes it: quoted as is when nothing in
/// it needs an escape (the common case), else escaped by serde_json.
pub fn push_str(out: &mut String, s: &str) {
    if needs_escape(s.as_bytes()) {
        out.push_str(&Value::from(s).to_string());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Whether `bytes` hold one that a JSON string must escape (a control character, `"`
/// or `\`), looked for eight bytes at a time: each word is tested for a byte below
/// 0x20 and for one equal to either character (the classic "has less" / "has zero"
/// bit tests, exact for whether any byte matches).
pub fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        // Eight bytes always make the array; a zero word would only take the slow path.
        let x = u64::from_ne_bytes(word.try_into().unwrap_or([0; 8]));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        if below(x, 0x20) | below(quote, 1) | below(backslash, 1) != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time test agrees with a byte-at-a-time one: every byte value at
    /// every place of strings of 1 to 17 bytes otherwise plain.
    #[test]
    fn needs_escape_finds_every_byte_that_needs_one() {
        let slow = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for len in 1..=17 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    assert_eq!(needs_escape(&text), slow(&text), "{text:?}");
                }
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape(
            "caf\u{e9} \u{1F600} ~!#$%&'()*+,-./:;<=>?@[]^_`{|}".as_bytes()
        ));
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in ["plain", "", "q\"b\\", "c\u{1}\n\t", "é\u{7f}\u{1F600}"] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, Value::from(s).to_string());
        }
    }
}
