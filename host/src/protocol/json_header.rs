//! The JSONSocket header on the wire: the first JSON value a peer sends, an object of
//! at most [`MAX_HEADER`] bytes nesting at most [`MAX_DEPTH`] levels. On a byte stream
//! it may arrive a byte at a time, so its end is found by a scanner that resumes where
//! it stopped (each byte is looked at once), and the value is parsed once, when it is
//! complete: a trickling client costs linear time, not a re-parse per packet.

use serde_json::Value;

/// A header larger than this is refused.
pub const MAX_HEADER: usize = 64 * 1024;
/// How deep a header may nest.
pub const MAX_DEPTH: usize = 32;
/// The JSONSocket protocol version this proxy speaks.
pub const VERSION: i64 = 1;

/// A handshake that went wrong, with the status it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub u16, pub String);

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(400, message.into())
}

/// Finds the end of the first JSON object in a growing buffer.
#[derive(Debug, Default)]
pub struct HeaderScan {
    /// Bytes of the buffer looked at so far.
    at: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl HeaderScan {
    /// Looks at what `buf` holds beyond the last call; `Ok(Some(end))` once the object
    /// that starts it is complete (`buf[..end]`), `Ok(None)` while it is not.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Option<usize>, Refusal> {
        while self.at < buf.len() {
            if self.at >= MAX_HEADER {
                return Err(bad(format!("the header is larger than {MAX_HEADER} bytes")));
            }
            let b = buf[self.at];
            self.at += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ if self.depth == 0 && b != b'{' => {
                    return Err(bad("the header must be a JSON object"));
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(bad(format!(
                            "the header nests deeper than {MAX_DEPTH} levels"
                        )));
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Ok(Some(self.at));
                    }
                }
                b'"' => self.in_string = true,
                _ => {}
            }
        }
        Ok(None)
    }
}

/// Parses a complete header message: one JSON object and nothing but whitespace after
/// it.
pub fn parse(message: &[u8]) -> Result<Value, Refusal> {
    let mut scan = HeaderScan::default();
    let end = match scan.feed(message)? {
        Some(end) => end,
        None if message.iter().all(u8::is_ascii_whitespace) => return Err(bad("empty header")),
        None => return Err(bad("the header is not complete JSON")),
    };
    if !message[end..].iter().all(u8::is_ascii_whitespace) {
        return Err(bad("the header message holds more than one JSON value"));
    }
    serde_json::from_slice(&message[..end]).map_err(|e| bad(format!("the header is not JSON: {e}")))
}

/// Checks a client's header: an object with an integer `JSONSocketVersion` of 1.
pub fn validate(header: &Value) -> Result<(), Refusal> {
    let obj = header
        .as_object()
        .ok_or_else(|| bad("the header must be a JSON object"))?;
    match obj.get("JSONSocketVersion") {
        Some(v) if v.is_i64() || v.is_u64() => match v.as_i64() {
            Some(VERSION) => Ok(()),
            Some(n) if n > VERSION => Err(Refusal(
                505,
                format!("JSONSocket version {n} is not supported (1 is)"),
            )),
            _ => Err(bad(format!("bad JSONSocketVersion {v}"))),
        },
        Some(v) => Err(bad(format!(
            "JSONSocketVersion must be an integer, not {v}"
        ))),
        None => Err(bad("the header has no JSONSocketVersion")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_resumes_and_finds_the_end_once() {
        let text = br#" {"a": "}{\"", "b": [1, {"c": 2}]} rest"#;
        let mut scan = HeaderScan::default();
        for end in 1..text.len() {
            if let Some(found) = scan.feed(&text[..end]).unwrap() {
                assert_eq!(&text[found..], b" rest");
                return;
            }
        }
        panic!("never complete");
    }

    #[test]
    fn headers_are_bounded() {
        let deep = format!("{}{}", "{\"a\":".repeat(40), "}".repeat(40));
        assert!(parse(deep.as_bytes()).unwrap_err().1.contains("deeper"));
        let long = format!("{{\"a\": \"{}\"", "x".repeat(MAX_HEADER));
        assert!(
            HeaderScan::default()
                .feed(long.as_bytes())
                .unwrap_err()
                .1
                .contains("larger")
        );
        assert_eq!(
            parse(b"[1]").unwrap_err().1,
            "the header must be a JSON object"
        );
        assert!(parse(b"{} {}").unwrap_err().1.contains("more than one"));
        assert_eq!(
            validate(&parse(br#"{"JSONSocketVersion": 2}"#).unwrap())
                .unwrap_err()
                .0,
            505
        );
        assert!(validate(&parse(br#"{"JSONSocketVersion": 1}"#).unwrap()).is_ok());
    }
}
